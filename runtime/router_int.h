/*
 * router_int.h - the router's handlers, split by concern across router.c
 * (dispatch, subscriptions, reads, directory), actions.c (actions, the
 * queue drain, action status) and session.c (login, refresh, logout).
 * Private to runtime/.
 */
#ifndef TW_ROUTER_INT_H
#define TW_ROUTER_INT_H

#include "runtime_int.h"

/* Sends resp (reference consumed) to the caller's connection. */
void tw_router_reply(tw_mw_call *call, tw_msg *resp);
/* An error response for a request (problem consumed); sets call->status. */
void tw_router_reply_error(tw_mw_call *call, json_t *problem);
/* A completed response with output (consumed, may be NULL). */
void tw_router_reply_output(tw_mw_call *call, json_t *output);

void tw_actions_request(tw_mw_call *call);      /* invokeaction, writeproperty */
void tw_actions_query(tw_mw_call *call);        /* queryaction, queryallactions, cancelaction */
void tw_actions_agent_answer(tw_mw_call *call); /* responses and progress from agents */
void tw_actions_thing_deleted(tw_runtime *rt, const char *twin_id);
void tw_actions_fini(tw_runtime *rt);

void tw_session_handle(tw_mw_call *call); /* login, refresh, logout */

#endif

/*
 * twin_id.c - twin ids "dtw:{agentID}:{thingID}". Agent ids cannot contain
 * ':' (tw_client_id_valid), so the first ':' after the prefix ends the agent
 * id and the agent's own thing id may contain anything.
 */
#include "twin_ops.h"

#include <stdio.h>
#include <string.h>

int tw_twin_id_make(const char *agent_id, const char *thing_id, char *out, size_t n)
{
    /* on every agent message: plain copies instead of snprintf */
    size_t a = strlen(agent_id), t = strlen(thing_id);
    if (5 + a + t >= n) {
        if (n) out[0] = '\0';
        return TW_ETOOBIG;
    }
    memcpy(out, "dtw:", 4);
    memcpy(out + 4, agent_id, a);
    out[4 + a] = ':';
    memcpy(out + 5 + a, thing_id, t + 1);
    return 0;
}

int tw_twin_id_split(const char *twin_id, char *buf, const char **agent_id, const char **thing_id)
{
    if (!twin_id || strncmp(twin_id, "dtw:", 4) != 0) return TW_EINVAL;
    strcpy(buf, twin_id);
    char *agent = buf + 4;
    char *colon = strchr(agent, ':');
    if (!colon || colon == agent || colon[1] == '\0') return TW_EINVAL;
    *colon = '\0';
    if (!tw_client_id_valid(agent)) return TW_EINVAL;
    *agent_id = agent;
    *thing_id = colon + 1;
    return 0;
}

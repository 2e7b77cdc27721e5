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
    int len = snprintf(out, n, "dtw:%s:%s", agent_id, thing_id);
    return (len < 0 || (size_t)len >= n) ? TW_ETOOBIG : 0;
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

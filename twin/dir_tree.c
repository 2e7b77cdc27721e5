/*
 * dir_tree.c - the directory's order-statistic tree (see dir_int.h): a treap
 * keyed by Thing id with random priorities, each node counting the nodes
 * below it, so inserts and deletes cost O(log n) expected and a page of the
 * listing starts at any offset in O(log n).
 */
#include "twin/dir_int.h"

#include <string.h>

size_t dir_tree_size(const entry *e)
{
    return e ? e->size : 0;
}

static void fix(entry *e)
{
    e->size = 1 + dir_tree_size(e->l) + dir_tree_size(e->r);
}

/* Splits t into ids < key (l) and ids >= key (r). */
static void split(entry *t, const char *key, entry **l, entry **r)
{
    if (!t) {
        *l = *r = NULL;
    } else if (strcmp(t->id, key) < 0) {
        split(t->r, key, &t->r, r);
        fix(t);
        *l = t;
    } else {
        split(t->l, key, l, &t->l);
        fix(t);
        *r = t;
    }
}

static entry *merge(entry *a, entry *b)
{
    if (!a) return b;
    if (!b) return a;
    if (a->prio > b->prio) {
        a->r = merge(a->r, b);
        fix(a);
        return a;
    }
    b->l = merge(a, b->l);
    fix(b);
    return b;
}

entry *dir_tree_insert(entry *t, entry *e)
{
    if (!t) return e;
    if (e->prio > t->prio) {
        split(t, e->id, &e->l, &e->r);
        fix(e);
        return e;
    }
    if (strcmp(e->id, t->id) < 0)
        t->l = dir_tree_insert(t->l, e);
    else
        t->r = dir_tree_insert(t->r, e);
    fix(t);
    return t;
}

entry *dir_tree_erase(entry *t, const char *id)
{
    if (!t) return NULL;
    int c = strcmp(id, t->id);
    if (c == 0) return merge(t->l, t->r);
    if (c < 0)
        t->l = dir_tree_erase(t->l, id);
    else
        t->r = dir_tree_erase(t->r, id);
    fix(t);
    return t;
}

/* Replaces the node with id e->id by e (same position in the order). */
entry *dir_tree_replace(entry *t, entry *e)
{
    int c = strcmp(e->id, t->id);
    if (c == 0) {
        e->l = t->l;
        e->r = t->r;
        e->prio = t->prio;
        e->size = t->size;
        return e;
    }
    if (c < 0)
        t->l = dir_tree_replace(t->l, e);
    else
        t->r = dir_tree_replace(t->r, e);
    return t;
}

bool dir_tree_walk(entry *t, size_t from, dir_visit_fn fn, void *ctx)
{
    while (t) {
        size_t ls = dir_tree_size(t->l);
        if (from < ls) {
            if (!dir_tree_walk(t->l, from, fn, ctx)) return false;
            from = 0;
        } else {
            from -= ls;
        }
        if (from == 0) {
            if (!fn(ctx, t)) return false;
        } else {
            from--;
        }
        t = t->r;
    }
    return true;
}

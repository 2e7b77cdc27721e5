/*
 * jsonpath.h - a JSONPath subset (after RFC 9535) to search the directory.
 *
 * Grammar (whitespace is allowed between tokens):
 *
 *   query      = "$" segment*
 *   segment    = "." name | "." "*" | "[" selectors "]"
 *              | ".." name | ".." "*" | ".." "[" selectors "]"
 *   selectors  = selector *("," selector)
 *   selector   = string            ; member: ['name'] or ["name"]
 *              | int               ; array index, negative from the end
 *              | [int] ":" [int]   ; array slice start:end (step 1)
 *              | "*"               ; every member / element
 *              | "?" filter        ; ?(...) also accepted
 *   name       = (ALPHA / "_" / "@" / non-ASCII) *(ALPHA / DIGIT / "_" / "-" / "@" / non-ASCII)
 *   filter     = or
 *   or         = and *("||" and)
 *   and        = unary *("&&" unary)
 *   unary      = "!" unary | "(" or ")" | test
 *   test       = operand [cmp operand]   ; alone: true if the path exists
 *   cmp        = "==" | "!=" | "<" | "<=" | ">" | ">="
 *   operand    = "@" singular* | "$" singular* | string | number
 *              | "true" | "false" | "null"
 *   singular   = "." name | "[" string "]" | "[" int "]"
 *
 * Strings are single or double quoted with backslash escapes (\' \" \\ \/ \b
 * \f \n \r \t \uXXXX). Comparisons follow RFC 9535: numbers compare
 * numerically, strings by code points, other types only with == and !=, and
 * a comparison with a missing operand is false (except missing == missing).
 * `..` visits a node and all its descendants in document order.
 *
 * Limits: queries up to TW_JSONPATH_MAX_LEN bytes, TW_JSONPATH_MAX_NODES
 * syntax nodes, filter nesting up to 32; an evaluation visits at most
 * TW_JSONPATH_MAX_STEPS nodes (then TW_ETOOBIG: a query like $..[?...] over
 * a huge document cannot occupy a thread for long).
 *
 * A compiled tw_jsonpath is immutable: evaluate it from any number of threads.
 */
#ifndef TW_TWIN_JSONPATH_H
#define TW_TWIN_JSONPATH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define TW_JSONPATH_MAX_LEN 4096
#define TW_JSONPATH_MAX_NODES 512
#define TW_JSONPATH_MAX_STEPS 50000000ULL

typedef struct tw_jsonpath tw_jsonpath;

/*
 * Compiles a query. On a syntax error returns TW_EINVAL (TW_ETOOBIG when over
 * a limit) and, when err is not NULL, writes a message naming the byte offset
 * where parsing failed ("at offset 7: expected ']'") and sets *err_offset.
 */
int tw_jsonpath_compile(const char *query, tw_jsonpath **out, char *err, size_t errlen,
                        size_t *err_offset);
void tw_jsonpath_free(tw_jsonpath *p);
/* Lowers the node-visit budget of evaluations (default
 * TW_JSONPATH_MAX_STEPS). Call before sharing p between threads. */
void tw_jsonpath_set_budget(tw_jsonpath *p, uint64_t steps);

/* Called for each matched node (borrowed); return nonzero to stop. */
typedef int (*tw_jsonpath_fn)(void *ctx, json_t *node);

/* Evaluates p on root (borrowed), calling fn per match in document order.
 * Returns 0, the nonzero value fn returned, or TW_ETOOBIG when the step
 * budget ran out. */
int tw_jsonpath_eval(const tw_jsonpath *p, json_t *root, tw_jsonpath_fn fn, void *ctx);

/* Convenience: a new array of the matched nodes (at most max; TW_ETOOBIG
 * when there are more). */
int tw_jsonpath_query(const tw_jsonpath *p, json_t *root, size_t max, json_t **result);

/* Like tw_jsonpath_query, but when the query starts with `$[*]` or
 * `$[?filter]` and root is a large array (4096+ items), the items are split
 * over nthreads threads (at most 8); the result is the same, in the same
 * order. Otherwise it is tw_jsonpath_query. */
int tw_jsonpath_query_parallel(const tw_jsonpath *p, json_t *root, size_t max, int nthreads,
                               json_t **result);

/*
 * A hint for an index: when p is `$[?F]...` and F is a conjunction (&&)
 * that requires `@[member] == 'text'` (or @.member, either side), with no
 * `$` path inside F, returns text (owned by p). Every item the query selects
 * then has that member equal to text, so evaluating p over only the items
 * an index says may have it gives the same result. NULL otherwise.
 */
const char *tw_jsonpath_eq_hint(const tw_jsonpath *p, const char *member);

#endif

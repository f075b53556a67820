/*
 * schedule.c — the watchdog's schedule, a binary min-heap (see schedule.h).
 */
#include "schedule.h"

#include "alloc.h"
#include "error.h"

static void set(dlock__schedule *q, size_t i, dlock__sched *s)
{
    q->heap[i] = s;
    s->idx = i;
}

static void sift_up(dlock__schedule *q, size_t i)
{
    dlock__sched *s = q->heap[i];
    while (i > 0 && q->heap[(i - 1) / 2]->due_ns > s->due_ns) {
        set(q, i, q->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    set(q, i, s);
}

static void sift_down(dlock__schedule *q, size_t i)
{
    dlock__sched *s = q->heap[i];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= q->n)
            break;
        if (k + 1 < q->n && q->heap[k + 1]->due_ns < q->heap[k]->due_ns)
            k++;
        if (q->heap[k]->due_ns >= s->due_ns)
            break;
        set(q, i, q->heap[k]);
        i = k;
    }
    set(q, i, s);
}

int dlock__sched_reserve(dlock__schedule *q)
{
    if (q->members == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        dlock__sched **h = dlock__realloc(q->heap, cap * sizeof *h);
        if (!h)
            return dlock__err(DLOCK_ENOMEM, "out of memory");
        q->heap = h;
        q->cap = cap;
    }
    q->members++;
    return 0;
}

void dlock__sched_unreserve(dlock__schedule *q)
{
    q->members--;
}

void dlock__sched_push(dlock__schedule *q, dlock__sched *s, int64_t due_ns)
{
    s->due_ns = due_ns;
    set(q, q->n++, s);
    sift_up(q, s->idx);
}

void dlock__sched_remove(dlock__schedule *q, dlock__sched *s)
{
    size_t i = s->idx;
    if (i == (size_t)-1 || i >= q->n || q->heap[i] != s)
        return;
    s->idx = (size_t)-1;
    if (--q->n == i)
        return;
    set(q, i, q->heap[q->n]);
    sift_down(q, i);
    sift_up(q, q->heap[i]->idx);
}

dlock__sched *dlock__sched_first(const dlock__schedule *q)
{
    return q->n > 0 ? q->heap[0] : NULL;
}

void dlock__sched_free(dlock__schedule *q)
{
    dlock__free(q->heap);
    q->heap = NULL;
    q->n = q->cap = q->members = 0;
}

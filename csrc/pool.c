/* The engine's thread pool: one persistent worker thread that takes the second part of every
 * two-way parallel section of lf_run (the backward direction of a bidirectional layer, the
 * second half of a batch, the second half of the hidden units of a large layer). The pool is
 * process-wide: lf_pool_start creates the worker, lf_pool_stop (also run at exit) joins it;
 * lf_run never creates a thread. A section is handed over by bumping a generation counter;
 * the worker spins on it for the configured time before it sleeps on a condition variable.
 * The caller, once its own part is done, runs the section itself if the worker has not
 * claimed it yet, else spins until the worker is done (see lf_pool_end).
 *
 * One caller owns the pool per section (a try-lock): a caller that finds it owned by another
 * thread, or not started, runs the section on its own thread (recurrent.c), with the same
 * kernels and modes, so a result does not depend on whether the pool was free.
 *
 * Where the worker runs: after both threads slept (a stream idle between frames), the kernel
 * may wake the worker on the caller's core, e.g. in a VM, whose idle vCPU is halted and counts
 * as preempted, so the scheduler does not pick it. Both threads then share one core: every
 * section runs serially, plus the worker's spinning, until the load balancer separates them
 * (measured on 2 KVM vCPUs: 256 streams stepped in rounds of 4 calls after 30 ms idle,
 * 2.2 ms per call against 1.1 ms with the threads on two cores, and 2.05 ms on one thread).
 * So the worker compares its core with the caller's each time it wakes and, when they are the
 * same, moves itself off (its affinity without that core, then back to the mask it started
 * with, which leaves it where it landed). */
#ifdef __linux__
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

/* Default spin before sleeping, for the worker between sections and for the caller waiting
 * for the worker. Measured (docs/architecture.md): a stream stepped from Python comes back
 * within ~10-30 us, so the worker must still be awake then; beyond ~100 us spinning only
 * takes the core from other processes. */
#define LF_POOL_SPIN_US_DEFAULT 100

/* A handed-over section (on the caller's stack until lf_pool_end returns). */
typedef struct lf_section {
    void (*fn)(void *);
    void *arg;
} lf_section;

static struct {
    pthread_mutex_t mu;           /* guards start/stop, and the sleep of either side */
    pthread_cond_t cv;            /* worker: new section or stop; caller: section done */
    pthread_t thread;
    int running;                  /* under mu: the worker exists */
    int hooks;                    /* under mu: atexit and pthread_atfork registered */
    int exiting;                  /* under mu: at exit, no restart */
    atomic_flag owned;            /* a caller owns the pool for one section */
    /* Section g (gen) is run by whoever moves claim from g - 1 to g first: the worker when
     * it wakes, or the caller taking it back (lf_pool_reclaim) if the worker has not started
     * it; so a caller never waits for a worker the OS has not scheduled yet. */
    atomic_uint_fast64_t gen;     /* sections handed over */
    atomic_uint_fast64_t claim;   /* sections claimed (by the worker or taken back) */
    atomic_uint_fast64_t done;    /* sections finished by the worker */
    _Atomic(const lf_section *) sec;  /* the latest section, stored before gen's bump */
    lf_section current;           /* the owner's section */
    int reclaimed;                /* the owner took its section back */
    atomic_int sleepers;          /* threads in (or about to enter) the cv wait */
    atomic_int stop;
    atomic_int_fast64_t spin_ns;
    atomic_int_fast64_t starts;   /* worker threads created since the process started */
    atomic_int active;            /* a section is under way (from lf_pool_begin to _end) */
    atomic_int caller_cpu;        /* the core of the latest section's caller, or -1 */
    atomic_int_fast64_t moves;    /* times the worker moved off the caller's core */
#ifdef __linux__
    cpu_set_t allowed;            /* the worker's start mask, empty if unknown (set before
                                     the worker is created) */
#endif
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, .owned = ATOMIC_FLAG_INIT,
          .spin_ns = LF_POOL_SPIN_US_DEFAULT * 1000,
          .caller_cpu = -1};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One pause of a spinning wait for the other thread; a yield now and then, in case it was
 * descheduled or shares this core. */
static inline void spin_pause(unsigned i)
{
    cpu_relax();
    if ((i & 4095) == 0)
        sched_yield();
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The worker: waits until gen != seen (then returns it) or stop is set; spins first, then
 * sleeps on the condition variable. */
static uint_fast64_t wait_section(uint_fast64_t seen)
{
    const int64_t spin = atomic_load_explicit(&pool.spin_ns, memory_order_relaxed);
    uint_fast64_t v;
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        v = atomic_load(&pool.gen);
        if (v != seen || atomic_load(&pool.stop))
            return v;
        cpu_relax();
        if ((i & 63) == 63) {
            /* the spin counts from the end of the latest section: a section the caller took
             * back (the worker woke late) is followed by the next one within a few us */
            const int64_t t = now_ns();
            if (!t0 || atomic_load_explicit(&pool.active, memory_order_relaxed))
                t0 = t;
            else if (t - t0 > spin)
                break;
        }
    }
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add(&pool.sleepers, 1);  /* seq_cst: a notifier that bumps gen after this
                                             either is seen below or sees us */
    while ((v = atomic_load(&pool.gen)) == seen && !atomic_load(&pool.stop))
        pthread_cond_wait(&pool.cv, &pool.mu);
    atomic_fetch_sub(&pool.sleepers, 1);
    pthread_mutex_unlock(&pool.mu);
    return v;
}

/* After a seq_cst change of gen: wakes the worker if it sleeps (then returns 1). */
static int notify(void)
{
    if (atomic_load(&pool.sleepers) == 0)
        return 0;
    pthread_mutex_lock(&pool.mu);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    return 1;
}

static int current_cpu(void)
{
#ifdef __linux__
    return sched_getcpu();
#else
    return -1;
#endif
}

/* The worker, woken on the core of the caller: moves to another core it is allowed on. */
static void move_off(int cpu)
{
#ifdef __linux__
    cpu_set_t others = pool.allowed;
    CPU_CLR(cpu, &others);
    if (CPU_COUNT(&others) > 0 && CPU_ISSET(cpu, &pool.allowed)
        && sched_setaffinity(0, sizeof others, &others) == 0) {
        sched_setaffinity(0, sizeof pool.allowed, &pool.allowed);
        atomic_fetch_add(&pool.moves, 1);
    }
#else
    (void)cpu;
#endif
}

static void *worker(void *unused)
{
    (void)unused;
    /* Not gen: done was set to gen before this thread was created, and only this thread
     * changes it. */
    uint_fast64_t seen = atomic_load(&pool.done);
    for (;;) {
        seen = wait_section(seen);
        if (atomic_load(&pool.stop))
            return NULL;
        const int caller = atomic_load_explicit(&pool.caller_cpu, memory_order_relaxed);
        if (caller >= 0 && current_cpu() == caller)
            move_off(caller);
        /* sec is section seen's or, if that one was taken back already, a later one: then
         * the claim fails and the later section is seen next time round. */
        const lf_section *sec = atomic_load(&pool.sec);
        uint_fast64_t expect = seen - 1;
        if (atomic_compare_exchange_strong(&pool.claim, &expect, seen)) {
            sec->fn(sec->arg);
            atomic_store(&pool.done, seen);
        }
    }
}

static void stop_at_exit(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.exiting = 1;
    pthread_mutex_unlock(&pool.mu);
    lf_pool_stop();
}

/* fork() copies only the forking thread: the child has no worker (lf_pool_start starts one;
 * until then its parallel sections run on the calling thread). mu is held across the fork so
 * that no other thread is inside it; the child gets a fresh cv, since the copy still counts
 * the parent's sleeping worker as a waiter, and a broadcast in the child would wait for that
 * waiter forever (seen: a child's first parallel section hung in pthread_cond_broadcast). */
static void before_fork(void) { pthread_mutex_lock(&pool.mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&pool.mu); }
static void after_fork_child(void)
{
    pthread_cond_init(&pool.cv, NULL);
    pool.running = 0;
    atomic_flag_clear(&pool.owned);
    atomic_store(&pool.sleepers, 0);
    atomic_store(&pool.active, 0);  /* a section of another thread was under way */
    atomic_store(&pool.stop, 0);
    atomic_store(&pool.claim, atomic_load(&pool.gen));
    atomic_store(&pool.done, atomic_load(&pool.gen));
    pthread_mutex_unlock(&pool.mu);
}

lf_status lf_pool_start(int32_t spin_us)
{
    if (spin_us >= 0)
        atomic_store(&pool.spin_ns, (int_fast64_t)spin_us * 1000);
    lf_status st = LF_OK;
    pthread_mutex_lock(&pool.mu);
    if (pool.running) {
        /* running */
    } else if (pool.exiting) {
        st = LF_E_NO_MEMORY;
    } else if (!pool.hooks && (atexit(stop_at_exit) != 0
                               || pthread_atfork(before_fork, after_fork_parent,
                                                 after_fork_child) != 0)) {
        st = LF_E_NO_MEMORY;
    } else {
        pool.hooks = 1;
        atomic_store(&pool.stop, 0);
        atomic_store(&pool.claim, atomic_load(&pool.gen));
        atomic_store(&pool.done, atomic_load(&pool.gen));
#ifdef __linux__
        /* the worker's start mask is this thread's (cpusets and taskset are honoured) */
        if (sched_getaffinity(0, sizeof pool.allowed, &pool.allowed) != 0)
            CPU_ZERO(&pool.allowed);
#endif
        if (pthread_create(&pool.thread, NULL, worker, NULL) != 0) {
            st = LF_E_NO_MEMORY;
        } else {
            pool.running = 1;
            atomic_fetch_add(&pool.starts, 1);
#ifdef __linux__
            pthread_setname_np(pool.thread, "lf_pool");  /* for top -H, gdb and the tests */
#endif
        }
    }
    pthread_mutex_unlock(&pool.mu);
    return st;
}

void lf_pool_stop(void)
{
    /* Own the pool, so that no section is under way and none starts while stopping. */
    while (atomic_flag_test_and_set(&pool.owned))
        sched_yield();
    pthread_mutex_lock(&pool.mu);
    const int running = pool.running;
    pool.running = 0;
    if (running) {
        atomic_store(&pool.stop, 1);
        pthread_cond_broadcast(&pool.cv);
    }
    pthread_mutex_unlock(&pool.mu);
    if (running)
        pthread_join(pool.thread, NULL);
    atomic_flag_clear(&pool.owned);
}

int64_t lf_pool_starts(void) { return atomic_load(&pool.starts); }

int64_t lf_pool_moves(void) { return atomic_load(&pool.moves); }

int lf_pool_begin(void (*fn)(void *), void *arg)
{
    if (atomic_flag_test_and_set(&pool.owned))
        return 0;   /* another caller's section */
    pthread_mutex_lock(&pool.mu);
    const int running = pool.running;
    pthread_mutex_unlock(&pool.mu);
    if (!running) {
        atomic_flag_clear(&pool.owned);
        return 0;
    }
    pool.current = (lf_section){fn, arg};
    pool.reclaimed = 0;
    atomic_store_explicit(&pool.active, 1, memory_order_relaxed);
    atomic_store_explicit(&pool.caller_cpu, current_cpu(), memory_order_relaxed);
    atomic_store(&pool.sec, &pool.current);
    atomic_fetch_add(&pool.gen, 1);
    /* A worker woken on this core (see the top of this file) waits there until this thread
     * sleeps or its time slice ends (measured: 1 ms and more, the section long taken back);
     * a yield lets it run now, and move off. With nothing else runnable on this core (the
     * worker woken elsewhere) the yield returns at once. Only after the worker slept. */
    if (notify())
        sched_yield();
    return 1;
}

int lf_pool_reclaim_after(int64_t wait_ns)
{
    if (pool.reclaimed)
        return 1;
    const uint_fast64_t g = atomic_load(&pool.gen);
    const int64_t t0 = wait_ns > 0 ? now_ns() : 0;
    for (unsigned i = 1; wait_ns > 0 && atomic_load(&pool.claim) != g; i++) {
        cpu_relax();
        if ((i & 63) == 0 && now_ns() - t0 > wait_ns)
            break;
    }
    return lf_pool_reclaim();
}

int lf_pool_reclaim(void)
{
    if (pool.reclaimed)
        return 1;
    const uint_fast64_t g = atomic_load(&pool.gen);
    uint_fast64_t expect = g - 1;
    if (atomic_load(&pool.claim) == g
        || !atomic_compare_exchange_strong(&pool.claim, &expect, g))
        return 0;
    pool.reclaimed = 1;
    return 1;
}

void lf_pool_end(void)
{
    if (!pool.reclaimed && lf_pool_reclaim()) {
        pool.current.fn(pool.current.arg);
    } else if (!pool.reclaimed) {
        /* The worker runs the section: spin until it is done, yielding now and then in case
         * it shares this core. Never sleep here: the kernel would wake this thread on the
         * worker's core (on 2 KVM vCPUs it did, almost every time) and the next sections
         * would run serially until the worker moved off again. */
        const uint_fast64_t target = atomic_load(&pool.gen);
        for (unsigned i = 1; atomic_load(&pool.done) != target; i++)
            spin_pause(i);
    }
    atomic_store_explicit(&pool.active, 0, memory_order_relaxed);
    atomic_flag_clear(&pool.owned);
}

void lf_barrier_wait(lf_barrier *b)
{
    const unsigned g = atomic_load_explicit(&b->gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) + 1 == b->parties) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_store_explicit(&b->gen, g + 1, memory_order_release);
        return;
    }
    /* Spin: the other part is a step's work away. */
    for (unsigned i = 1; atomic_load_explicit(&b->gen, memory_order_acquire) == g; i++)
        spin_pause(i);
}

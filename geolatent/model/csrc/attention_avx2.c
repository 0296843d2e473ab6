/* Exact fp32 multi-head attention for x86-64 CPUs with AVX2 + FMA (inference only).
 *
 * Why: with head widths of 16 (OlmoEarth Nano) the generic fused CPU kernel spends much of its
 * time moving score blocks through memory. Here a tile of 6 queries x 512 keys stays in L1:
 * scores from register-tiled FMAs, an online softmax with a polynomial exp2, and the value sum
 * into register accumulators; keys are visited in L2-sized chunks by all query tiles of a task.
 * fp32 throughout; results match softmax(q k^T / sqrt(d)) v to ~1e-6.
 *
 * Layout: q [B, Nq, H, d], k and v [B, Nk, H, d], out [B, Nq, H, d], each with its own strides
 * (elements) for b, n and h; the d axis is contiguous. d is 16, 32, 48 or 64. key_valid, when
 * given, is uint8 [B, Nk] (row stride kv_sb): keys with 0 get no weight (they are dropped while
 * the keys are packed). A query row whose keys are all invalid gets zeros.
 * Threads: an OpenMP team of nthreads takes (batch, head, query chunk) tasks from a shared
 * counter. Loaded into a PyTorch process, the library binds to the libgomp PyTorch already
 * loaded (same soname), so the kernel runs on PyTorch's own worker threads: no second team
 * spinning against it.
 */
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MQ 6       /* queries per register tile */
#define KB 512     /* keys per online-softmax block (6 x 512 scores: 12 KB of L1) */
#define KSTEP 16   /* keys are padded to a multiple of the register tile's 2 vectors */
#define MAXD 64
#define KC 2048    /* keys per L2-resident chunk (multiple of KB) */
#define QCHUNK 768 /* queries per task (multiple of MQ) */
#define LOG2E 1.4426950408889634f

static inline __m256 exp2_core(__m256 x) {
    /* 2^x for x in [-125, 1]. x = n + f with f in [-0.5, 0.5]; 2^f from a degree-5 polynomial
       fitted on that interval (relative error 1.1e-7), 2^n added to the exponent bits. */
    const __m256 shifter = _mm256_set1_ps(12582912.0f); /* 1.5 * 2^23 rounds to an integer */
    __m256 t = _mm256_add_ps(x, shifter);
    __m256 f = _mm256_sub_ps(x, _mm256_sub_ps(t, shifter));
    __m256 p = _mm256_set1_ps(1.3218672e-3f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6716983e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5508930e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022238e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314688e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_castps_si256(t), 23); /* n << 23 */
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

/* 2^x for any x <= 0 (-inf included): below -125 it gives 2^-125, negligible next to a softmax
   row sum, which is >= 1 when the offset is the row maximum. NaN stays NaN (max returns its
   second operand when one is NaN), so a NaN score poisons its row as in PyTorch. */
static inline __m256 exp2_nonpos(__m256 x) {
    return exp2_core(_mm256_max_ps(_mm256_set1_ps(-125.0f), x));
}

/* Lanes 0..n-1 set (n may be <= 0 or >= 8). */
static inline __m256 first_lanes(int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane));
}

static inline float hmax(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

static inline float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

#define TILE_FMA(r)                                                                  \
    b = _mm256_broadcast_ss(qt + (r) * d + c);                                       \
    a##r##0 = _mm256_fmadd_ps(b, k0v, a##r##0);                                      \
    a##r##1 = _mm256_fmadd_ps(b, k1v, a##r##1);

#define TILE_STORE(r)                                                                \
    _mm256_store_ps(sp + (r) * KB, a##r##0);                                         \
    _mm256_store_ps(sp + (r) * KB + 8, a##r##1);

/* Scores of MQ queries (qt, [MQ, d], pre-scaled) against keys k0..k0+kl of the packed K^T
   (kt, [nkp / 8, d, 8]) into s [MQ, KB]; 6 x 2 key vectors per register tile. */
static inline void tile_scores(const float *qt, const float *kt, float *s, int64_t k0, int64_t kl,
                               int64_t d) {
    for (int64_t kv = 0; kv < kl / 8; kv += 2) {
        const float *kb0 = kt + (k0 / 8 + kv) * d * 8;
        const float *kb1 = kb0 + d * 8;
        __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps();
        __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps();
        __m256 a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps();
        __m256 a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
        __m256 a40 = _mm256_setzero_ps(), a41 = _mm256_setzero_ps();
        __m256 a50 = _mm256_setzero_ps(), a51 = _mm256_setzero_ps();
        for (int64_t c = 0; c < d; c++) {
            __m256 k0v = _mm256_load_ps(kb0 + c * 8);
            __m256 k1v = _mm256_load_ps(kb1 + c * 8);
            __m256 b;
            TILE_FMA(0) TILE_FMA(1) TILE_FMA(2) TILE_FMA(3) TILE_FMA(4) TILE_FMA(5)
        }
        float *sp = s + kv * 8;
        TILE_STORE(0) TILE_STORE(1) TILE_STORE(2) TILE_STORE(3) TILE_STORE(4) TILE_STORE(5)
    }
}

/* One block of kl <= KB keys (k0..k0+kl, kl a multiple of KSTEP) for one tile of MQ queries:
   scores, softmax update of the offsets m (log2 units) and sums l, then acc = alpha * acc + P V.
   bounded: the queries carry scale * log2(e), so scores are in log2 units; m holds
   |q| * max|k| per row (Cauchy-Schwarz), fixed for the whole row and at most 60 (checked by the
   caller), so every exponent s - m lies in [-120, 0]: no maximum, no clamp and no rescaling are
   needed, and shifting by a bound instead of the maximum is exact for softmax.
   Otherwise (large scores) the queries carry the 1 / sqrt(d) scale and the usual online softmax
   runs: block maximum, clamp, rescale, with exponents s * log2(e) - m in one FMA so that their
   rounding error is relative to the (small) difference, not to the (large) score. */
static inline void tile_block(const float *qt, float *acc, float *m, __m256 *l, float *s,
                              const float *kt, const float *vp, int64_t k0, int64_t kl,
                              int64_t nk, int64_t d, int bounded) {
    float alpha[MQ];
    tile_scores(qt, kt, s, k0, kl, d);
    const int64_t nreal = nk - k0 < kl ? nk - k0 : kl; /* keys past nreal are padding */
    if (bounded) {
        for (int i = 0; i < MQ; i++) {
            float *row = s + i * KB;
            const __m256 neg_m = _mm256_set1_ps(-m[i]);
            __m256 sum = _mm256_setzero_ps();
            for (int64_t j = 0; j < kl; j += 8) {
                __m256 p = exp2_core(_mm256_add_ps(_mm256_load_ps(row + j), neg_m));
                if (j + 8 > nreal) p = _mm256_and_ps(p, first_lanes(nreal - j));
                _mm256_store_ps(row + j, p);
                sum = _mm256_add_ps(sum, p);
            }
            l[i] = _mm256_add_ps(l[i], sum);
            alpha[i] = 1.0f;
        }
    } else {
        if (nreal < kl) /* padded keys get no weight (and stay out of the maximum) */
            for (int i = 0; i < MQ; i++)
                for (int64_t j = nreal; j < kl; j++) s[i * KB + j] = -INFINITY;
        for (int i = 0; i < MQ; i++) {
            float *row = s + i * KB;
            __m256 mx = _mm256_load_ps(row);
            for (int64_t j = 8; j < kl; j += 8) mx = _mm256_max_ps(mx, _mm256_load_ps(row + j));
            const float mb = hmax(mx) * LOG2E;
            const float mn = mb > m[i] ? mb : m[i];
            alpha[i] = exp2f(m[i] - mn);
            m[i] = mn;
            const __m256 neg_m = _mm256_set1_ps(-mn), log2e = _mm256_set1_ps(LOG2E);
            __m256 sum = _mm256_setzero_ps();
            for (int64_t j = 0; j < kl; j += 8) {
                __m256 p = exp2_nonpos(_mm256_fmadd_ps(_mm256_load_ps(row + j), log2e, neg_m));
                _mm256_store_ps(row + j, p);
                sum = _mm256_add_ps(sum, p);
            }
            l[i] = _mm256_fmadd_ps(l[i], _mm256_set1_ps(alpha[i]), sum);
        }
    }
    /* acc = alpha * acc + P V, 16 value columns at a time (12 accumulators). P V of the block
       is summed from zero and then added: two-level sums keep the rounding error of 10^4-key
       rows at the level of PyTorch's blocked kernel (one running sum would be ~10x worse). */
    for (int64_t c0 = 0; c0 < d; c0 += 16) {
        __m256 o[MQ][2];
        for (int i = 0; i < MQ; i++) o[i][0] = o[i][1] = _mm256_setzero_ps();
        const float *vj = vp + k0 * d + c0;
        for (int64_t j = 0; j < kl; j++, vj += d) {
            const __m256 v0 = _mm256_load_ps(vj), v1 = _mm256_load_ps(vj + 8);
            for (int i = 0; i < MQ; i++) {
                const __m256 p = _mm256_broadcast_ss(s + i * KB + j);
                o[i][0] = _mm256_fmadd_ps(p, v0, o[i][0]);
                o[i][1] = _mm256_fmadd_ps(p, v1, o[i][1]);
            }
        }
        for (int i = 0; i < MQ; i++) {
            const __m256 al = _mm256_set1_ps(alpha[i]);
            float *a = acc + i * d + c0;
            _mm256_store_ps(a, _mm256_fmadd_ps(al, _mm256_load_ps(a), o[i][0]));
            _mm256_store_ps(a + 8, _mm256_fmadd_ps(al, _mm256_load_ps(a + 8), o[i][1]));
        }
    }
}

typedef struct {
    float *qt, *acc, *m, *l; /* per query tile: scaled queries, accumulators, maxima, sums */
} ChunkState;

/* Queries q0..q0+nrows of one (batch, head) against its packed keys (nk valid). Keys are taken
   in chunks of KC (K and V of a chunk stay in L2) and every query tile of the task visits a
   chunk before the next one is read. */
static void query_chunk(const float *q, int64_t q_sn, float *out, int64_t o_sn, int64_t nrows,
                        const float *kt, const float *vp, int64_t nk, float kmax, int64_t d,
                        float qscale, ChunkState *st) {
    if (nk == 0) {
        for (int64_t i = 0; i < nrows; i++) memset(out + i * o_sn, 0, d * sizeof(float));
        return;
    }
    const int64_t nkp = (nk + KSTEP - 1) / KSTEP * KSTEP;
    const int64_t ntiles = (nrows + MQ - 1) / MQ;
    float s[MQ * KB] __attribute__((aligned(32)));
    memset(st->qt, 0, ntiles * MQ * d * sizeof(float));
    memset(st->acc, 0, ntiles * MQ * d * sizeof(float));
    memset(st->l, 0, ntiles * MQ * 8 * sizeof(float));
    for (int64_t i = 0; i < nrows; i++)
        for (int64_t c = 0; c < d; c++) st->qt[i * d + c] = q[i * q_sn + c] * qscale;
    /* A tile is bounded when every row's |q| * max|k| (log2 units) is at most 60. */
    uint8_t bounded[QCHUNK / MQ];
    for (int64_t t = 0; t < ntiles; t++) {
        bounded[t] = 1;
        for (int i = 0; i < MQ; i++) {
            const float *qr = st->qt + (t * MQ + i) * d;
            float n2 = 0.0f;
            for (int64_t c = 0; c < d; c++) n2 += qr[c] * qr[c];
            const float bound = sqrtf(n2) * kmax * LOG2E;
            st->m[t * MQ + i] = bound;
            if (!(bound <= 60.0f)) bounded[t] = 0;
        }
        if (bounded[t])
            for (int64_t c = 0; c < MQ * d; c++) st->qt[t * MQ * d + c] *= LOG2E;
        else
            for (int i = 0; i < MQ; i++) st->m[t * MQ + i] = -INFINITY;
    }
    for (int64_t kc = 0; kc < nkp; kc += KC) {
        const int64_t kend = kc + KC < nkp ? kc + KC : nkp;
        for (int64_t t = 0; t < ntiles; t++) {
            float *qt = st->qt + t * MQ * d, *acc = st->acc + t * MQ * d, *m = st->m + t * MQ;
            __m256 l[MQ];
            for (int i = 0; i < MQ; i++) l[i] = _mm256_load_ps(st->l + (t * MQ + i) * 8);
            for (int64_t k0 = kc; k0 < kend; k0 += KB)
                tile_block(qt, acc, m, l, s, kt, vp, k0, kend - k0 < KB ? kend - k0 : KB, nk, d,
                           bounded[t]);
            for (int i = 0; i < MQ; i++) _mm256_store_ps(st->l + (t * MQ + i) * 8, l[i]);
        }
    }
    for (int64_t i = 0; i < nrows; i++) {
        const float inv = 1.0f / hsum(_mm256_load_ps(st->l + i * 8));
        for (int64_t c = 0; c < d; c++) out[i * o_sn + c] = st->acc[i * d + c] * inv;
    }
}

typedef struct {
    const float *q, *k, *v;
    float *out;
    const uint8_t *key_valid;
    int64_t q_sb, q_sn, q_sh, k_sb, k_sn, k_sh, v_sb, v_sn, v_sh, o_sb, o_sn, o_sh, kv_sb;
    int64_t B, H, nq, nk, d, chunks;
    float qscale;
    atomic_long next;
} Job;

/* Packs the valid keys of one (batch, head): K^T into [nkp / 8, d, 8] and V into [nkp, d],
   zero-padded. Returns the number of valid keys; *kmax gets the largest key norm. */
static int64_t pack_keys(const Job *job, int64_t bi, int64_t hi, float *kt, float *vp,
                         float *kmax) {
    const float *kh = job->k + bi * job->k_sb + hi * job->k_sh;
    const float *vh = job->v + bi * job->v_sb + hi * job->v_sh;
    const uint8_t *valid = job->key_valid ? job->key_valid + bi * job->kv_sb : NULL;
    const int64_t d = job->d;
    int64_t n = 0;
    float max2 = 0.0f;
    int has_nan = 0;
    for (int64_t j = 0; j < job->nk; j++) {
        if (valid && !valid[j]) continue;
        const float *kr = kh + j * job->k_sn;
        float *dst = kt + (n / 8) * d * 8 + (n % 8);
        float n2 = 0.0f;
        for (int64_t c = 0; c < d; c++) {
            dst[c * 8] = kr[c];
            n2 += kr[c] * kr[c];
        }
        if (n2 > max2) max2 = n2;
        if (n2 != n2) has_nan = 1;
        memcpy(vp + n * d, vh + j * job->v_sn, d * sizeof(float));
        n++;
    }
    const int64_t nkp = (n + KSTEP - 1) / KSTEP * KSTEP;
    for (int64_t j = n; j < nkp; j++) {
        float *dst = kt + (j / 8) * d * 8 + (j % 8);
        for (int64_t c = 0; c < d; c++) dst[c * 8] = 0.0f;
        memset(vp + j * d, 0, d * sizeof(float));
    }
    /* 1 + 1e-6: the bound must not fall below a score computed with rounding */
    *kmax = has_nan ? NAN : sqrtf(max2) * (1.0f + 1e-6f); /* NaN: the online path, like SDPA */
    return n;
}

static void *worker(void *arg) {
    Job *job = (Job *)arg;
    const int64_t nkp_max = (job->nk + KSTEP - 1) / KSTEP * KSTEP;
    const size_t bytes = (size_t)(nkp_max > 0 ? nkp_max : KSTEP) * job->d * sizeof(float);
    float *kt = aligned_alloc(32, bytes);
    float *vp = aligned_alloc(32, bytes);
    if (!kt || !vp) { /* the other threads take the tasks; the caller checks all were done */
        free(kt);
        free(vp);
        return NULL;
    }
    ChunkState st = {aligned_alloc(32, QCHUNK * MAXD * sizeof(float)),
                      aligned_alloc(32, QCHUNK * MAXD * sizeof(float)),
                      aligned_alloc(32, QCHUNK * sizeof(float)),
                      aligned_alloc(32, QCHUNK * 8 * sizeof(float))};
    if (!st.qt || !st.acc || !st.m || !st.l) {
        free(st.qt); free(st.acc); free(st.m); free(st.l); free(kt); free(vp);
        return NULL;
    }
    int64_t packed = -1, nvalid = 0;
    float kmax = 0.0f;
    const int64_t total = job->B * job->H * job->chunks;
    for (;;) {
        const int64_t task = atomic_fetch_add(&job->next, 1);
        if (task >= total) break;
        const int64_t bh = task / job->chunks, chunk = task % job->chunks;
        const int64_t bi = bh / job->H, hi = bh % job->H;
        if (bh != packed) {
            nvalid = pack_keys(job, bi, hi, kt, vp, &kmax);
            packed = bh;
        }
        const int64_t q0 = chunk * QCHUNK;
        const int64_t rows = job->nq - q0 < QCHUNK ? job->nq - q0 : QCHUNK;
        query_chunk(job->q + bi * job->q_sb + hi * job->q_sh + q0 * job->q_sn, job->q_sn,
                    job->out + bi * job->o_sb + hi * job->o_sh + q0 * job->o_sn, job->o_sn, rows,
                    kt, vp, nvalid, kmax, job->d, job->qscale, &st);
    }
    free(st.qt); free(st.acc); free(st.m); free(st.l);
    free(kt);
    free(vp);
    return NULL;
}

/* Returns 0 on success, 1 for an unsupported head width, 2 when no thread could get memory. */
int gl_attention_f32(const float *q, int64_t q_sb, int64_t q_sn, int64_t q_sh,
                     const float *k, int64_t k_sb, int64_t k_sn, int64_t k_sh,
                     const float *v, int64_t v_sb, int64_t v_sn, int64_t v_sh,
                     float *out, int64_t o_sb, int64_t o_sn, int64_t o_sh,
                     const uint8_t *key_valid, int64_t kv_sb,
                     int64_t B, int64_t H, int64_t nq, int64_t nk, int64_t d, float scale,
                     int nthreads) {
    if (d <= 0 || d > MAXD || d % 16) return 1;
    Job job = {q, k, v, out, key_valid,
               q_sb, q_sn, q_sh, k_sb, k_sn, k_sh, v_sb, v_sn, v_sh, o_sb, o_sn, o_sh, kv_sb,
               B, H, nq, nk, d, (nq + QCHUNK - 1) / QCHUNK,
               scale};
    atomic_init(&job.next, 0);
    const int64_t tasks = B * H * job.chunks;
    if (nthreads > tasks) nthreads = (int)tasks;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads)
    worker(&job);
    return atomic_load(&job.next) >= tasks ? 0 : 2;
}

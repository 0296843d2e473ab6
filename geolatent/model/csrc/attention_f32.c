/* Multi-head attention for x86-64 CPUs (inference only): exact fp32 with AVX2 + FMA or AVX-512,
 * and bf16 with AVX512_BF16 (the GL_BF16 section at the end). One entry point, gl_attention.
 *
 * One source, three builds: by default 8-lane AVX2 + FMA vectors; with -DGL_AVX512 (and
 * -mavx512f) 16-lane AVX-512 vectors, the same algorithm with twice the keys per register
 * tile; with -DGL_AVX512 -DGL_BF16 (and -mavx512bw -mavx512bf16) also the bf16 kernel. The V*
 * macros below are the only place the vector width of the fp32 kernel shows.
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

#ifdef GL_AVX512
#define W 16 /* floats per vector */
typedef __m512 vf;
#define VLOAD _mm512_load_ps
#define VSTORE _mm512_store_ps
#define VFMA _mm512_fmadd_ps
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VMAX _mm512_max_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps
#define VBCAST(p) _mm512_set1_ps(*(p))
static inline vf vexp_bits(vf p, vf t) { /* p * 2^n where t holds n in its low mantissa bits */
    __m512i e = _mm512_slli_epi32(_mm512_castps_si512(t), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
}
/* Lanes 0..n-1 of p kept, the others 0 (n may be <= 0 or >= W). */
static inline vf keep_first(vf p, int64_t n) {
    const __mmask16 m = n <= 0 ? 0 : n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    return _mm512_maskz_mov_ps(m, p);
}
static inline float hmax(vf v) { return _mm512_reduce_max_ps(v); }
static inline float hsum(vf v) { return _mm512_reduce_add_ps(v); }
#define ALIGN 64
#else
#define W 8
typedef __m256 vf;
#define VLOAD _mm256_load_ps
#define VSTORE _mm256_store_ps
#define VFMA _mm256_fmadd_ps
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VMAX _mm256_max_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps
#define VBCAST _mm256_broadcast_ss
static inline vf vexp_bits(vf p, vf t) {
    __m256i e = _mm256_slli_epi32(_mm256_castps_si256(t), 23); /* n << 23 */
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}
static inline vf keep_first(vf p, int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 0 ? 0 : n > 8 ? 8 : n)), lane);
    return _mm256_and_ps(p, _mm256_castsi256_ps(m));
}
static inline float hmax(vf v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}
static inline float hsum(vf v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}
#define ALIGN 32
#endif

#define MQ 6       /* queries per register tile */
#define KB 512     /* keys per online-softmax block (6 x 512 scores: 12 KB of L1) */
#define KSTEP (2 * W) /* keys are padded to a multiple of the register tile's 2 vectors */
#define MAXD 64
#define KC 2048    /* keys per L2-resident chunk (multiple of KB) */
#define QCHUNK 768 /* queries per task (multiple of MQ) */
#define LOG2E 1.4426950408889634f

static inline vf exp2_core(vf x) {
    /* 2^x for x in [-125, 1]. x = n + f with f in [-0.5, 0.5]; 2^f from a degree-5 polynomial
       fitted on that interval (relative error 1.1e-7), 2^n added to the exponent bits. */
    const vf shifter = VSET1(12582912.0f); /* 1.5 * 2^23 rounds to an integer */
    vf t = VADD(x, shifter);
    vf f = VSUB(x, VSUB(t, shifter));
    vf p = VSET1(1.3218672e-3f);
    p = VFMA(p, f, VSET1(9.6716983e-3f));
    p = VFMA(p, f, VSET1(5.5508930e-2f));
    p = VFMA(p, f, VSET1(2.4022238e-1f));
    p = VFMA(p, f, VSET1(6.9314688e-1f));
    p = VFMA(p, f, VSET1(1.0f));
    return vexp_bits(p, t); /* 2^n added to the exponent bits */
}

/* 2^x for any x <= 0 (-inf included): below -125 it gives 2^-125, negligible next to a softmax
   row sum, which is >= 1 when the offset is the row maximum. NaN stays NaN (max returns its
   second operand when one is NaN), so a NaN score poisons its row as in PyTorch. */
static inline vf exp2_nonpos(vf x) {
    return exp2_core(VMAX(VSET1(-125.0f), x));
}

#define TILE_FMA(r)                                                                  \
    b = VBCAST(qt + (r) * d + c);                                                    \
    a##r##0 = VFMA(b, k0v, a##r##0);                                                 \
    a##r##1 = VFMA(b, k1v, a##r##1);

/* The 6 x 2 register tile's accumulators, zeroed (T: the vector type). */
#define TILE_ZERO(T)                                                                 \
    T a00 = VZERO(), a01 = VZERO(), a10 = VZERO(), a11 = VZERO(), a20 = VZERO();     \
    T a21 = VZERO(), a30 = VZERO(), a31 = VZERO(), a40 = VZERO(), a41 = VZERO();     \
    T a50 = VZERO(), a51 = VZERO();

#define TILE_STORE(r)                                                                \
    VSTORE(sp + (r) * KB, a##r##0);                                                  \
    VSTORE(sp + (r) * KB + W, a##r##1);

/* Scores of MQ queries (qt, [MQ, d], pre-scaled) against keys k0..k0+kl of the packed K^T
   (kt, [nkp / W, d, W]) into s [MQ, KB]; 6 x 2 key vectors per register tile. */
static inline void tile_scores(const float *qt, const float *kt, float *s, int64_t k0, int64_t kl,
                               int64_t d) {
    for (int64_t kv = 0; kv < kl / W; kv += 2) {
        const float *kb0 = kt + (k0 / W + kv) * d * W;
        const float *kb1 = kb0 + d * W;
        TILE_ZERO(vf)
        for (int64_t c = 0; c < d; c++) {
            vf k0v = VLOAD(kb0 + c * W);
            vf k1v = VLOAD(kb1 + c * W);
            vf b;
            TILE_FMA(0) TILE_FMA(1) TILE_FMA(2) TILE_FMA(3) TILE_FMA(4) TILE_FMA(5)
        }
        float *sp = s + kv * W;
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
static inline void tile_block(const float *qt, float *acc, float *m, vf *l, float *s,
                              const float *kt, const float *vp, int64_t k0, int64_t kl,
                              int64_t nk, int64_t d, int bounded) {
    float alpha[MQ];
    tile_scores(qt, kt, s, k0, kl, d);
    const int64_t nreal = nk - k0 < kl ? nk - k0 : kl; /* keys past nreal are padding */
    if (bounded) {
        for (int i = 0; i < MQ; i++) {
            float *row = s + i * KB;
            const vf neg_m = VSET1(-m[i]);
            vf sum = VZERO();
            for (int64_t j = 0; j < kl; j += W) {
                vf p = exp2_core(VADD(VLOAD(row + j), neg_m));
                if (j + W > nreal) p = keep_first(p, nreal - j);
                VSTORE(row + j, p);
                sum = VADD(sum, p);
            }
            l[i] = VADD(l[i], sum);
            alpha[i] = 1.0f;
        }
    } else {
        if (nreal < kl) /* padded keys get no weight (and stay out of the maximum) */
            for (int i = 0; i < MQ; i++)
                for (int64_t j = nreal; j < kl; j++) s[i * KB + j] = -INFINITY;
        for (int i = 0; i < MQ; i++) {
            float *row = s + i * KB;
            vf mx = VLOAD(row);
            for (int64_t j = W; j < kl; j += W) mx = VMAX(mx, VLOAD(row + j));
            const float mb = hmax(mx) * LOG2E;
            const float mn = mb > m[i] ? mb : m[i];
            alpha[i] = exp2f(m[i] - mn);
            m[i] = mn;
            const vf neg_m = VSET1(-mn), log2e = VSET1(LOG2E);
            vf sum = VZERO();
            for (int64_t j = 0; j < kl; j += W) {
                vf p = exp2_nonpos(VFMA(VLOAD(row + j), log2e, neg_m));
                VSTORE(row + j, p);
                sum = VADD(sum, p);
            }
            l[i] = VFMA(l[i], VSET1(alpha[i]), sum);
        }
    }
    /* acc = alpha * acc + P V, 16 value columns at a time (6 or 12 accumulators). P V of the block
       is summed from zero and then added: two-level sums keep the rounding error of 10^4-key
       rows at the level of PyTorch's blocked kernel (one running sum would be ~10x worse). */
    enum { NV = 16 / W }; /* vectors per 16 value columns */
    for (int64_t c0 = 0; c0 < d; c0 += 16) {
        vf o[MQ][NV];
        for (int i = 0; i < MQ; i++)
            for (int u = 0; u < NV; u++) o[i][u] = VZERO();
        const float *vj = vp + k0 * d + c0;
        for (int64_t j = 0; j < kl; j++, vj += d) {
            vf vv[NV];
            for (int u = 0; u < NV; u++) vv[u] = VLOAD(vj + u * W);
            for (int i = 0; i < MQ; i++) {
                const vf p = VBCAST(s + i * KB + j);
                for (int u = 0; u < NV; u++) o[i][u] = VFMA(p, vv[u], o[i][u]);
            }
        }
        for (int i = 0; i < MQ; i++) {
            const vf al = VSET1(alpha[i]);
            float *a = acc + i * d + c0;
            for (int u = 0; u < NV; u++)
                VSTORE(a + u * W, VFMA(al, VLOAD(a + u * W), o[i][u]));
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
    float s[MQ * KB] __attribute__((aligned(ALIGN)));
    memset(st->qt, 0, ntiles * MQ * d * sizeof(float));
    memset(st->acc, 0, ntiles * MQ * d * sizeof(float));
    memset(st->l, 0, ntiles * MQ * W * sizeof(float));
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
            vf l[MQ];
            for (int i = 0; i < MQ; i++) l[i] = VLOAD(st->l + (t * MQ + i) * W);
            for (int64_t k0 = kc; k0 < kend; k0 += KB)
                tile_block(qt, acc, m, l, s, kt, vp, k0, kend - k0 < KB ? kend - k0 : KB, nk, d,
                           bounded[t]);
            for (int i = 0; i < MQ; i++) VSTORE(st->l + (t * MQ + i) * W, l[i]);
        }
    }
    for (int64_t i = 0; i < nrows; i++) {
        const float inv = 1.0f / hsum(VLOAD(st->l + i * W));
        for (int64_t c = 0; c < d; c++) out[i * o_sn + c] = st->acc[i * d + c] * inv;
    }
}

typedef struct {
    const void *q, *k, *v; /* float or bf16 (raw uint16) elements */
    void *out;
    const uint8_t *key_valid;
    int64_t q_sb, q_sn, q_sh, k_sb, k_sn, k_sh, v_sb, v_sn, v_sh, o_sb, o_sn, o_sh, kv_sb;
    int64_t B, H, nq, nk, d, chunks;
    float scale; /* fp32: 1 / sqrt(d); bf16: log2(e) / sqrt(d) */
    atomic_long next;
} Job;

/* Takes the next (batch, head, query chunk) task from the shared counter: 0 when none is left,
   else 1 with bh = batch * H + head, the chunk's first query q0 and its number of rows. */
static int next_task(Job *job, int64_t *bh, int64_t *q0, int64_t *rows) {
    const int64_t task = atomic_fetch_add(&job->next, 1);
    if (task >= job->B * job->H * job->chunks) return 0;
    *bh = task / job->chunks;
    *q0 = task % job->chunks * QCHUNK;
    *rows = job->nq - *q0 < QCHUNK ? job->nq - *q0 : QCHUNK;
    return 1;
}

/* Element offsets of (batch, head) bh (and row n) in q, k, v, out and key_valid. */
#define BH_AT(job, bh, sb, sh) ((bh) / (job)->H * (job)->sb + (bh) % (job)->H * (job)->sh)
#define Q_AT(job, bh, n) (BH_AT(job, bh, q_sb, q_sh) + (n) * (job)->q_sn)
#define O_AT(job, bh, n) (BH_AT(job, bh, o_sb, o_sh) + (n) * (job)->o_sn)
#define VALID_AT(job, bh) ((job)->key_valid ? (job)->key_valid + (bh) / (job)->H * (job)->kv_sb : NULL)

/* Packs the valid keys of (batch, head) bh: K^T into [nkp / W, d, W] and V into [nkp, d],
   zero-padded. Returns the number of valid keys; *kmax gets the largest key norm. */
static int64_t pack_keys(const Job *job, int64_t bh, float *kt, float *vp, float *kmax) {
    const float *kh = (const float *)job->k + BH_AT(job, bh, k_sb, k_sh);
    const float *vh = (const float *)job->v + BH_AT(job, bh, v_sb, v_sh);
    const uint8_t *valid = VALID_AT(job, bh);
    const int64_t d = job->d;
    int64_t n = 0;
    float max2 = 0.0f;
    int has_nan = 0;
    for (int64_t j = 0; j < job->nk; j++) {
        if (valid && !valid[j]) continue;
        const float *kr = kh + j * job->k_sn;
        float *dst = kt + (n / W) * d * W + (n % W);
        float n2 = 0.0f;
        for (int64_t c = 0; c < d; c++) {
            dst[c * W] = kr[c];
            n2 += kr[c] * kr[c];
        }
        if (n2 > max2) max2 = n2;
        if (n2 != n2) has_nan = 1;
        memcpy(vp + n * d, vh + j * job->v_sn, d * sizeof(float));
        n++;
    }
    const int64_t nkp = (n + KSTEP - 1) / KSTEP * KSTEP;
    for (int64_t j = n; j < nkp; j++) {
        float *dst = kt + (j / W) * d * W + (j % W);
        for (int64_t c = 0; c < d; c++) dst[c * W] = 0.0f;
        memset(vp + j * d, 0, d * sizeof(float));
    }
    /* 1 + 1e-6: the bound must not fall below a score computed with rounding */
    *kmax = has_nan ? NAN : sqrtf(max2) * (1.0f + 1e-6f); /* NaN: the online path, like SDPA */
    return n;
}

static void worker(Job *job) {
    const int64_t nkp_max = (job->nk + KSTEP - 1) / KSTEP * KSTEP;
    const size_t bytes = (size_t)(nkp_max > 0 ? nkp_max : KSTEP) * job->d * sizeof(float);
    float *kt = aligned_alloc(ALIGN, bytes);
    float *vp = aligned_alloc(ALIGN, bytes);
    ChunkState st = {aligned_alloc(ALIGN, QCHUNK * MAXD * sizeof(float)),
                      aligned_alloc(ALIGN, QCHUNK * MAXD * sizeof(float)),
                      aligned_alloc(ALIGN, QCHUNK * sizeof(float)),
                      aligned_alloc(ALIGN, QCHUNK * W * sizeof(float))};
    if (kt && vp && st.qt && st.acc && st.m && st.l) {
        int64_t packed = -1, nvalid = 0, bh, q0, rows;
        float kmax = 0.0f;
        while (next_task(job, &bh, &q0, &rows)) {
            if (bh != packed) nvalid = pack_keys(job, packed = bh, kt, vp, &kmax);
            query_chunk((const float *)job->q + Q_AT(job, bh, q0), job->q_sn,
                        (float *)job->out + O_AT(job, bh, q0), job->o_sn, rows, kt, vp, nvalid,
                        kmax, job->d, job->scale, &st);
        }
    } /* else: the other threads take the tasks; the caller checks all were done */
    free(st.qt); free(st.acc); free(st.m); free(st.l);
    free(kt);
    free(vp);
}

#ifdef GL_BF16
/* ------------------------------------------------------------------------------------------
 * bf16 attention (AVX512_BF16): q, k, v and out in bfloat16, scores, softmax and sums in fp32.
 *
 * Why: in bf16 inference q, k and v are already bf16. _mm512_dpbf16_ps multiplies 32 bf16
 * pairs and adds them into 16 fp32 lanes, so QK^T and PV each take half the instructions of
 * the fp32 FMAs, and K and V take half the cache. Same shape as the fp32 kernel: 6-query x
 * 512-key tiles in L1, keys in L2-sized chunks, an online softmax (block maximum, rescale) in
 * fp32 with a degree-3 exp2 (relative error 8e-5, far below bf16's 4e-3 step). The
 * probabilities are rounded to bf16 (round to nearest even) for PV, as every bf16 flash
 * kernel does; the row sums use the fp32 values. No N x N matrix: memory is O((Nq + Nk) d).
 *
 * Packed layouts (one (batch, head) at a time, 32-bit words = 2 bf16):
 *   K: [nkp / 16][d / 2][16 keys] words (the pair k[j][2c], k[j][2c+1]): one vector holds 16
 *      keys' values of one pair of columns, multiplied by a broadcast pair of q.
 *   V: [nkp / 2][d] words (the pair v[2j][c], v[2j+1][c]): one vector holds 16 columns of two
 *      keys, multiplied by a broadcast pair of probabilities p[i][2j], p[i][2j+1].
 * NaN in q, k or v gives NaN rows as in PyTorch (a NaN score or value enters every sum).
 * ------------------------------------------------------------------------------------------ */
typedef uint16_t bf16_t; /* raw bfloat16 bits */

static inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

/* 2^x for x <= 0, NaN kept (max returns its second operand when one is NaN); below -126 it gives
   2^-126, negligible next to a row sum >= 1. Degree-3 fit of 2^f on [-0.5, 0.5]. */
static inline __m512 exp2_bf(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-126.0f), x);
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(5.508877e-2f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4260466e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9327628e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.999289e-1f));
    return _mm512_scalef_ps(p, n);
}

#define BTILE_DP(r)                                                                  \
    b = as_bh(_mm512_set1_epi32((int)qt[(r) * dp + c]));                             \
    a##r##0 = _mm512_dpbf16_ps(a##r##0, k0v, b);                                     \
    a##r##1 = _mm512_dpbf16_ps(a##r##1, k1v, b);

/* Raw scores q.k (fp32) of MQ queries (qt, [MQ, d / 2] words) against keys k0..k0+kl of the
   packed K into s [MQ, KB]; 6 queries x 32 keys per register tile. */
static inline void tile_scores_bf(const uint32_t *qt, const uint32_t *kt, float *s, int64_t k0,
                                  int64_t kl, int64_t d) {
    const int64_t dp = d / 2;
    for (int64_t kv = 0; kv < kl / 16; kv += 2) {
        const uint32_t *kb0 = kt + (k0 / 16 + kv) * dp * 16;
        const uint32_t *kb1 = kb0 + dp * 16;
        TILE_ZERO(__m512)
        for (int64_t c = 0; c < dp; c++) {
            const __m512bh k0v = as_bh(_mm512_load_si512(kb0 + c * 16));
            const __m512bh k1v = as_bh(_mm512_load_si512(kb1 + c * 16));
            __m512bh b;
            BTILE_DP(0) BTILE_DP(1) BTILE_DP(2) BTILE_DP(3) BTILE_DP(4) BTILE_DP(5)
        }
        float *sp = s + kv * 16;
        TILE_STORE(0) TILE_STORE(1) TILE_STORE(2) TILE_STORE(3) TILE_STORE(4) TILE_STORE(5)
    }
}

/* acc[:, c0 : c0 + 16 nv] = alpha * acc + P V for one block (pb: bf16 probabilities [MQ, KB]).
   Called with a literal nv (1..4) so that the accumulators stay in registers. */
static inline void pv_block_bf(const bf16_t *pb, const uint32_t *vp, int64_t k0, int64_t kl,
                               int64_t d, int64_t c0, const int nv, const float *alpha,
                               float *acc) {
    __m512 o[MQ][4];
    for (int i = 0; i < MQ; i++)
        for (int u = 0; u < nv; u++) o[i][u] = VZERO();
    const uint32_t *pw = (const uint32_t *)pb;
    const uint32_t *vj = vp + (k0 / 2) * d + c0;
    for (int64_t jp = 0; jp < kl / 2; jp++, vj += d) {
        __m512bh vv[4];
        for (int u = 0; u < nv; u++) vv[u] = as_bh(_mm512_load_si512(vj + u * 16));
        for (int i = 0; i < MQ; i++) {
            const __m512bh p = as_bh(_mm512_set1_epi32((int)pw[i * (KB / 2) + jp]));
            for (int u = 0; u < nv; u++) o[i][u] = _mm512_dpbf16_ps(o[i][u], vv[u], p);
        }
    }
    for (int i = 0; i < MQ; i++) {
        const __m512 al = _mm512_set1_ps(alpha[i]);
        float *a = acc + i * d + c0;
        for (int u = 0; u < nv; u++)
            _mm512_store_ps(a + u * 16, _mm512_fmadd_ps(al, _mm512_load_ps(a + u * 16), o[i][u]));
    }
}

/* One block of kl <= KB keys (a multiple of 32) for one tile of MQ queries: scores, online
   softmax in log2 units (c = scale * log2(e)) updating the maxima m and sums l, then P V. */
static inline void tile_block_bf(const uint32_t *qt, float *acc, float *m, float *l, float *s,
                                 bf16_t *pb, const uint32_t *kt, const uint32_t *vp, int64_t k0,
                                 int64_t kl, int64_t nk, int64_t d, float c) {
    float alpha[MQ];
    tile_scores_bf(qt, kt, s, k0, kl, d);
    const int64_t nreal = nk - k0 < kl ? nk - k0 : kl; /* keys past nreal are padding */
    const __m512 cv = _mm512_set1_ps(c);
    for (int i = 0; i < MQ; i++) {
        float *row = s + i * KB;
        for (int64_t j = nreal; j < kl; j++) row[j] = -INFINITY; /* out of the maximum */
        __m512 mx = _mm512_load_ps(row);
        for (int64_t j = 16; j < kl; j += 16) mx = _mm512_max_ps(mx, _mm512_load_ps(row + j));
        const float mb = _mm512_reduce_max_ps(mx) * c;
        const float mn = mb > m[i] ? mb : m[i];
        alpha[i] = exp2f(m[i] - mn);
        m[i] = mn;
        const __m512 neg_m = _mm512_set1_ps(-mn);
        __m512 sum = VZERO();
        for (int64_t j = 0; j < kl; j += 32) {
            __m512 p0 = exp2_bf(_mm512_fmadd_ps(_mm512_load_ps(row + j), cv, neg_m));
            __m512 p1 = exp2_bf(_mm512_fmadd_ps(_mm512_load_ps(row + j + 16), cv, neg_m));
            if (j + 32 > nreal) { /* padding gets exactly 0 */
                p0 = keep_first(p0, nreal - j);
                p1 = keep_first(p1, nreal - j - 16);
            }
            sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
            _mm512_store_si512(pb + i * KB + j, (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
        }
        l[i] = l[i] * alpha[i] + _mm512_reduce_add_ps(sum);
    }
    for (int64_t c0 = 0; c0 < d; c0 += 64) {
        switch ((d - c0) / 16) {
        case 1: pv_block_bf(pb, vp, k0, kl, d, c0, 1, alpha, acc); break;
        case 2: pv_block_bf(pb, vp, k0, kl, d, c0, 2, alpha, acc); break;
        case 3: pv_block_bf(pb, vp, k0, kl, d, c0, 3, alpha, acc); break;
        default: pv_block_bf(pb, vp, k0, kl, d, c0, 4, alpha, acc); break;
        }
    }
}

typedef struct {
    uint32_t *qt; /* per query tile: q as bf16 pairs */
    float *acc, *m, *l;
} ChunkStateBf;

static void query_chunk_bf(const bf16_t *q, int64_t q_sn, bf16_t *out, int64_t o_sn,
                           int64_t nrows, const uint32_t *kt, const uint32_t *vp, int64_t nk,
                           int64_t d, float c, ChunkStateBf *st) {
    if (nk == 0) {
        for (int64_t i = 0; i < nrows; i++) memset(out + i * o_sn, 0, d * sizeof(bf16_t));
        return;
    }
    const int64_t nkp = (nk + 31) / 32 * 32;
    const int64_t ntiles = (nrows + MQ - 1) / MQ;
    float s[MQ * KB] __attribute__((aligned(64)));
    bf16_t pb[MQ * KB] __attribute__((aligned(64)));
    memset(st->qt, 0, ntiles * MQ * d * sizeof(bf16_t));
    memset(st->acc, 0, ntiles * MQ * d * sizeof(float));
    memset(st->l, 0, ntiles * MQ * sizeof(float));
    for (int64_t i = 0; i < ntiles * MQ; i++) st->m[i] = -INFINITY;
    for (int64_t i = 0; i < nrows; i++) memcpy(st->qt + i * d / 2, q + i * q_sn, d * sizeof(bf16_t));
    for (int64_t kc = 0; kc < nkp; kc += KC) {
        const int64_t kend = kc + KC < nkp ? kc + KC : nkp;
        for (int64_t t = 0; t < ntiles; t++)
            for (int64_t k0 = kc; k0 < kend; k0 += KB)
                tile_block_bf(st->qt + t * MQ * d / 2, st->acc + t * MQ * d, st->m + t * MQ,
                              st->l + t * MQ, s, pb, kt, vp, k0, kend - k0 < KB ? kend - k0 : KB,
                              nk, d, c);
    }
    for (int64_t i = 0; i < nrows; i++) {
        const __m512 inv = _mm512_set1_ps(1.0f / st->l[i]);
        for (int64_t c0 = 0; c0 < d; c0 += 16) {
            const __m512 o = _mm512_mul_ps(_mm512_load_ps(st->acc + i * d + c0), inv);
            _mm256_storeu_si256((__m256i *)(out + i * o_sn + c0), (__m256i)_mm512_cvtneps_pbh(o));
        }
    }
}

/* Packs the valid keys of (batch, head) bh into the K and V layouts above, zero-padded to a
   multiple of 32 keys. Returns the number of valid keys. */
static int64_t pack_keys_bf(const Job *job, int64_t bh, uint32_t *kt, uint32_t *vp) {
    const bf16_t *kh = (const bf16_t *)job->k + BH_AT(job, bh, k_sb, k_sh);
    const bf16_t *vh = (const bf16_t *)job->v + BH_AT(job, bh, v_sb, v_sh);
    const uint8_t *valid = VALID_AT(job, bh);
    const int64_t d = job->d, dp = d / 2;
    bf16_t *vb = (bf16_t *)vp;
    int64_t n = 0;
    for (int64_t j = 0; j < job->nk; j++) {
        if (valid && !valid[j]) continue;
        uint32_t kw[MAXD / 2];
        memcpy(kw, kh + j * job->k_sn, d * sizeof(bf16_t));
        uint32_t *dst = kt + (n / 16) * dp * 16 + (n % 16);
        for (int64_t c = 0; c < dp; c++) dst[c * 16] = kw[c];
        const bf16_t *vr = vh + j * job->v_sn;
        bf16_t *vd = vb + (n / 2) * d * 2 + (n % 2);
        for (int64_t c = 0; c < d; c++) vd[2 * c] = vr[c];
        n++;
    }
    const int64_t nkp = (n + 31) / 32 * 32;
    for (int64_t j = n; j < nkp; j++) {
        uint32_t *dst = kt + (j / 16) * dp * 16 + (j % 16);
        for (int64_t c = 0; c < dp; c++) dst[c * 16] = 0;
        bf16_t *vd = vb + (j / 2) * d * 2 + (j % 2);
        for (int64_t c = 0; c < d; c++) vd[2 * c] = 0;
    }
    return n;
}

static void worker_bf(Job *job) {
    const int64_t nkp_max = (job->nk + 31) / 32 * 32;
    const size_t bytes = (size_t)(nkp_max > 0 ? nkp_max : 32) * job->d * sizeof(bf16_t);
    uint32_t *kt = aligned_alloc(64, bytes);
    uint32_t *vp = aligned_alloc(64, bytes);
    ChunkStateBf st = {aligned_alloc(64, QCHUNK * MAXD * sizeof(bf16_t)),
                       aligned_alloc(64, QCHUNK * MAXD * sizeof(float)),
                       aligned_alloc(64, QCHUNK * sizeof(float)),
                       aligned_alloc(64, QCHUNK * sizeof(float))};
    if (kt && vp && st.qt && st.acc && st.m && st.l) {
        int64_t packed = -1, nvalid = 0, bh, q0, rows;
        while (next_task(job, &bh, &q0, &rows)) {
            if (bh != packed) nvalid = pack_keys_bf(job, packed = bh, kt, vp);
            query_chunk_bf((const bf16_t *)job->q + Q_AT(job, bh, q0), job->q_sn,
                           (bf16_t *)job->out + O_AT(job, bh, q0), job->o_sn, rows, kt, vp,
                           nvalid, job->d, job->scale, &st);
        }
    } /* else as in worker */
    free(st.qt); free(st.acc); free(st.m); free(st.l);
    free(kt);
    free(vp);
}
#endif /* GL_BF16 */

/* softmax(q k^T / sqrt(d)) v. dtype 0: float q, k, v and out (every build); dtype 1: bf16 (raw
   uint16; builds with GL_BF16 only). Strides are in elements. Returns 0 on success, 1 for an
   unsupported head width, 2 when no thread could get memory, 3 for a dtype this build lacks. */
int gl_attention(int dtype, const void *q, int64_t q_sb, int64_t q_sn, int64_t q_sh,
                 const void *k, int64_t k_sb, int64_t k_sn, int64_t k_sh,
                 const void *v, int64_t v_sb, int64_t v_sn, int64_t v_sh,
                 void *out, int64_t o_sb, int64_t o_sn, int64_t o_sh,
                 const uint8_t *key_valid, int64_t kv_sb,
                 int64_t B, int64_t H, int64_t nq, int64_t nk, int64_t d, float scale,
                 int nthreads) {
    if (d <= 0 || d > MAXD || d % 16) return 1;
    void (*work)(Job *) = worker;
    if (dtype == 1) {
#ifdef GL_BF16
        work = worker_bf;
        scale *= LOG2E; /* the bf16 kernel's scores are in log2 units */
#else
        return 3;
#endif
    } else if (dtype != 0) {
        return 3;
    }
    Job job = {q, k, v, out, key_valid,
               q_sb, q_sn, q_sh, k_sb, k_sn, k_sh, v_sb, v_sn, v_sh, o_sb, o_sn, o_sh, kv_sb,
               B, H, nq, nk, d, (nq + QCHUNK - 1) / QCHUNK,
               scale};
    atomic_init(&job.next, 0);
    const int64_t tasks = B * H * job.chunks;
    if (nthreads > tasks) nthreads = (int)tasks;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads)
    work(&job);
    return atomic_load(&job.next) >= tasks ? 0 : 2;
}

// sample.cu: one token from each row of logits, as plumb_ops::ops::sample specifies it
// (penalties, logprobs of the penalized row, the allow-mask, greedy or top-k / top-p / min-p
// and the draw with the row's uniform). Only the ids and the asked logprobs leave the device.
//
// Launch: grid (rows), block SB = 1024, static shared memory (~42 KB). Block r takes row r
// (logits + r·vocab) and the record meta[r·ROW_WORDS ..] (sample.rs writes it: parameters, the
// uniform, where its history and mask lie in meta), and writes out[r·OUT_WORDS ..]: id,
// logprob bits, n, then n (id, logprob bits) pairs.
//
// The steps of a row:
// - Penalties: the row is copied to work + r·vocab; the history's tokens are counted with
//   integer atomics in counts + r·vocab (zero between calls: each count is taken back with an
//   atomic exchange by the one thread that applies it), and each distinct token is penalized
//   once with the f32 operations of the reference, unfused (__f*_rn).
// - Logprobs: block max and Σ exp (f64) over the finite logits; the top n by a count select
//   over every token (see below), gathered in id order and sorted by one thread (n ≤ 20).
// - Greedy: a strided first-maximum scan per thread, merged by a shuffle tree (ties to the
//   smaller id), as argmax.cu.
// - Uncut rows (no top-p, no min-p, top-k off or ≥ the candidates): the reference walks the
//   whole row in id order, so does this: weights expf((l − max) / T), the total, then one
//   ordered pass of block scans that stops at the token whose cumulative weight passes u·Σ.
// - Cut rows walk best first (logit descending, ties by lower id) without sorting, by radix
//   selects on the logits' order-preserving 32-bit keys: three passes over the candidates
//   (digits of 12, 10 and 10 bits, histograms of 4096 / 1024 bins in shared memory) find the
//   key and the rank within its group of equal keys where a running count or weight, taken
//   best first, crosses a target. Top-k is a count select (its k tokens are then gathered
//   into shared memory when k ≤ 1024, so that the next selects read 1024 values, not the
//   row; above, the set stays a cut: keys above the k-th, and the first tokens of its group);
//   top-p is a weight select at temperature 1 (target ⌈top_p · Z⌉, the set becomes a cut);
//   min-p is a predicate (expf(l − max) ≥ min_p); the draw is a weight select at the row's
//   temperature (the first position whose weight passes ⌊u · Σ⌋), and the token is the r-th
//   of its key group in id order (one ordered pass).
// Weights are summed as integers, round(w · 2⁴⁰) with w ≤ 1 (the best weighs 1), so every
// histogram, total and scan is exact and no result depends on the order of atomics: the same
// row gives the same token every run. A vocabulary may hold 2²³ tokens (Σ < 2⁶³). The only
// atomics are integer adds, an exchange, and positions of a gather that is in id order.
// Differences from the f64 reference: f32 exponentials and (l − max)/T (relative ≤ |x|·2⁻²³
// + 2⁻²² per weight) and the 2⁻⁴¹ of the fixed point; docs/sampling.md bounds their effect on a
// cumulative weight, and the check's ε covers it.
//
// Cost per sampled row of V logits (each pass reads the row once, ~10 µs for V = 128k from L2
// on one SM; rows run on separate SMs): uncut 3 passes (max, total, walk — the walk stops
// early); top-k ≤ 1024 with top-p / min-p 5 passes (max, 3 select, gather) then work on 1024
// values; top-p or top-k > 1024 over the whole row 8 passes (max, 3 + 3 select, take);
// logprobs add 2 passes, and 4 more for a top list; greedy 1. The first level's histogram sees
// every candidate: contention on its hottest of 4096 bins is the known cost (warp-aggregated
// adds would cut it).
//
// Launched from src/sample.rs (Backend::sample_rows).
// Check: `plumb check --device cuda --op sample` (ids exact but within ε of a boundary,
// logprobs within 1e-4, a chi-square test of 20,000 draws per parameter set).
// Time: no bench-ops row; it ends each sampled step of the serving engine once wired in.

#define SB 1024
#define CAP 1024
#define MAX_TOP 20
#define ROW_WORDS 16
#define OUT_WORDS (3 + 2 * MAX_TOP)
#define NONE 0xffffffffu
#define Q_ONE 1099511627776.0f  // 2^40: one in the fixed point of weights

// The words of a row's record (ROW_WORDS in sample.rs).
enum { R_TEMP, R_TOPK, R_TOPP, R_MINP, R_REP, R_PRES, R_FREQ, R_NTOP, R_ULO, R_UHI, R_HIST,
       R_NHIST, R_MASK, R_BIAS, R_NBIAS };

// Target rules of a select: the position where the running count reaches k (T_COUNT), where
// the running weight reaches ⌈frac · total⌉ (T_TOPP), or exceeds ⌊frac · total⌋ (T_DRAW).
enum { T_COUNT, T_TOPP, T_DRAW };

struct Smem {
    u64 hist[4096];
    u32 list_id[CAP];
    float list_v[CAP];
    u32 top_id[MAX_TOP];
    float top_v[MAX_TOP];
    u64 scan64[32];
    u32 scan32[32];
    double redd[32];
    float redf[32];
    u32 sel_bin;
    u64 sel_above, sel_group;
    u32 found;
};

// Values as the kernel sees them: `n` of `v`, element i being token id[i] (i without `id`),
// allowed by `mask` (every token without one).
struct Src {
    const float* v;
    const u32* id;
    const u32* mask;
    u32 n;
};

// The elements a select counts: every one (`all`), else the finite and allowed ones; with a
// cut, only keys above cut_key and cut_take members of cut_key's group (added as one weight,
// they are equal); with min_p > 0, only values with expf(v − mx) ≥ min_p.
struct Univ {
    bool all;
    bool cut;
    u32 cut_key, cut_take;
    float min_p;
    float mx;
};

// What a select adds per element: 1, or the fixed-point weight expf((v − mx) / t).
struct Metric {
    bool mass;
    float mx, t;
};

// The rank-th (1-based) element with key `key`: what a select finds.
struct Sel {
    u32 key;
    u32 rank;
};

static __device__ __forceinline__ u32 umin(u32 a, u32 b) { return a < b ? a : b; }

static __device__ __forceinline__ bool finite_f(float v) {
    return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}

// The IEEE total order as unsigned keys: larger key, larger value (a positive NaN above +inf).
static __device__ __forceinline__ u32 key_of(float v) {
    const u32 b = __float_as_uint(v);
    return b ^ ((b & 0x80000000u) ? 0xffffffffu : 0x80000000u);
}
static __device__ __forceinline__ float value_of(u32 k) {
    return __uint_as_float(k ^ ((k & 0x80000000u) ? 0x80000000u : 0xffffffffu));
}

static __device__ __forceinline__ bool allowed(const u32* mask, u32 t) {
    return !mask || ((mask[t >> 5] >> (t & 31)) & 1u);
}
static __device__ __forceinline__ u32 elem_id(const Src& s, u32 i) { return s.id ? s.id[i] : i; }
static __device__ __forceinline__ bool base_in(const Src& s, bool all, u32 i, float v) {
    return all || (finite_f(v) && allowed(s.mask, elem_id(s, i)));
}
static __device__ __forceinline__ bool min_p_ok(const Univ& u, float v) {
    return u.min_p <= 0.0f || expf(v - u.mx) >= u.min_p;
}
static __device__ __forceinline__ u64 metric(const Metric& m, float v) {
    return m.mass ? (u64)__float2ull_rn(expf((v - m.mx) / m.t) * Q_ONE) : 1ull;
}

template <typename T>
static __device__ __forceinline__ T warp_incl(T x) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const T y = __shfl_up_sync(FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    return x;
}

// Exclusive prefix sum of v in thread order over the block (SB threads = 32 warps); every
// thread gets the block's total. `sh`: 32 shared elements.
template <typename T>
static __device__ T block_scan(T v, T* total, T* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const T x = warp_incl(v);
    __syncthreads();  // sh may still be read by a previous call
    if (lane == 31) sh[warp] = x;
    __syncthreads();
    const T w = warp_incl(sh[lane]);
    const T before = __shfl_sync(FULL_MASK, w, (warp + 31) & 31);
    *total = __shfl_sync(FULL_MASK, w, 31);
    return (warp ? before : (T)0) + x - v;
}

static __device__ float block_max(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    return warp_max(sh[lane]);
}

// A fixed tree of f64 adds: the same sum every run.
static __device__ double block_sum_d(double v, double* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = sh[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ bool crosses(u64 x, u64 target, int rule) {
    return rule == T_DRAW ? x > target : x >= target;
}

static __device__ u64 first_target(int rule, u64 k, double frac, u64 total) {
    if (rule == T_COUNT) return k;
    if (rule == T_TOPP) {
        const u64 t = (u64)ceil(frac * (double)total);
        return t < 1 ? 1 : (t > total ? total : t);
    }
    const u64 t = (u64)(frac * (double)total);
    return total == 0 ? 0 : (t >= total ? total - 1 : t);
}

// Radix select over `s` restricted to `u`, best first: the key group where the running
// `m` crosses the target of `rule` (k, or frac of the total), and the rank in that group.
// Level L histograms the next 12 / 10 / 10 key bits of the elements whose higher bits equal
// the prefix found so far; the one thread whose scan range (bins best first) holds the
// crossing records the bin. Worked example, T_COUNT k = 3 over keys {9, 7, 7, 7, 2}: the
// group of key 7 holds positions 2..4, so the select returns key 7, rank 2.
static __device__ Sel select(Smem& sm, const Src& s, const Univ& u, const Metric& m, int rule,
                             u64 k, double frac) {
    const u32 tid = threadIdx.x;
    u32 prefix = 0;
    u64 above = 0, target = k, group = 0;
    int done = 0;
    for (int level = 0; level < 3; ++level) {
        const int bits = level == 0 ? 12 : 10;
        const int shift = 32 - done - bits;
        const u32 nb = 1u << bits;
        const u32 hi = done ? ~0u << (32 - done) : 0u;
        for (u32 b = tid; b < nb; b += SB) sm.hist[b] = 0;
        if (tid == 0) {
            sm.sel_bin = 0;
            sm.sel_above = above;
            sm.sel_group = 0;
        }
        __syncthreads();
        for (u32 i = tid; i < s.n; i += SB) {
            const float v = s.v[i];
            if (!base_in(s, u.all, i, v)) continue;
            const u32 key = key_of(v);
            if ((key & hi) != prefix || (u.cut && key <= u.cut_key) || !min_p_ok(u, v)) continue;
            atomicAdd(&sm.hist[(key >> shift) & (nb - 1)], metric(m, v));
        }
        if (tid == 0 && u.cut && (u.cut_key & hi) == prefix) {
            const float v = value_of(u.cut_key);
            if (min_p_ok(u, v))
                atomicAdd(&sm.hist[(u.cut_key >> shift) & (nb - 1)],
                          (u64)u.cut_take * metric(m, v));
        }
        __syncthreads();
        // Thread t owns the bins at positions [t·per, (t+1)·per) best first (bin nb−1 first).
        const u32 per = nb / SB;
        u64 mine = 0;
        for (u32 j = 0; j < per; ++j) mine += sm.hist[nb - 1 - (tid * per + j)];
        u64 total;
        const u64 before = block_scan(mine, &total, sm.scan64);
        if (level == 0) target = first_target(rule, k, frac, total);
        const u64 start = above + before;
        if (!crosses(start, target, rule) && crosses(start + mine, target, rule)) {
            u64 run = start;
            for (u32 j = 0; j < per; ++j) {
                const u32 b = nb - 1 - (tid * per + j);
                const u64 h = sm.hist[b];
                if (crosses(run + h, target, rule)) {
                    sm.sel_bin = b;
                    sm.sel_above = run;
                    sm.sel_group = h;
                    break;
                }
                run += h;
            }
        }
        __syncthreads();
        prefix |= sm.sel_bin << shift;
        above = sm.sel_above;
        group = sm.sel_group;
        done += bits;
        __syncthreads();  // every thread has read sel_* before the next level resets them
    }
    const u64 unit = m.mass ? metric(m, value_of(prefix)) : 1ull;
    u64 rank = 1;
    if (unit > 0 && target >= above) {
        rank = rule == T_DRAW ? (target - above) / unit + 1 : (target - above + unit - 1) / unit;
        const u64 members = group / unit;
        rank = rank > members ? members : rank;
        rank = rank < 1 ? 1 : rank;
    }
    Sel r = {prefix, (u32)rank};
    return r;
}

// The id of the rank-th (1-based) element of `s`, in its order, whose key is `key`.
static __device__ u32 take(Smem& sm, const Src& s, bool all, u32 key, u32 rank) {
    if (threadIdx.x == 0) sm.found = 0;
    u32 seen = 0;
    for (u32 base = 0; base < s.n && seen < rank; base += SB) {
        const u32 i = base + threadIdx.x;
        bool hit = false;
        if (i < s.n) {
            const float v = s.v[i];
            hit = base_in(s, all, i, v) && key_of(v) == key;
        }
        u32 total;
        const u32 before = block_scan((u32)hit, &total, sm.scan32);
        if (hit && seen + before + 1 == rank) sm.found = elem_id(s, i);
        seen += total;
    }
    __syncthreads();
    const u32 id = sm.found;
    __syncthreads();
    return id;
}

// Writes the elements of {key > cut} ∪ {the first `take_n` with key == cut} to out_id /
// out_v in the order of `s` (at most cap), and returns how many there are. One block scan per
// tile of SB packs both counts: (greater) | (equal << 16), each at most SB.
static __device__ u32 gather(Smem& sm, const Src& s, bool all, u32 cut, u32 take_n, u32* out_id,
                             float* out_v, u32 cap) {
    u32 gt_seen = 0, eq_seen = 0;
    for (u32 base = 0; base < s.n; base += SB) {
        const u32 i = base + threadIdx.x;
        u32 gt = 0, eq = 0;
        float v = 0.0f;
        if (i < s.n) {
            v = s.v[i];
            if (base_in(s, all, i, v)) {
                const u32 key = key_of(v);
                gt = key > cut;
                eq = key == cut;
            }
        }
        u32 total;
        const u32 before = block_scan(gt | (eq << 16), &total, sm.scan32);
        const u32 eq_before = eq_seen + (before >> 16);
        if (gt || (eq && eq_before < take_n)) {
            const u32 pos = gt_seen + (before & 0xffffu) + umin(eq_before, take_n);
            if (pos < cap) {
                out_id[pos] = elem_id(s, i);
                out_v[pos] = v;
            }
        }
        gt_seen += total & 0xffffu;
        eq_seen += total >> 16;
    }
    __syncthreads();
    return gt_seen + umin(eq_seen, take_n);
}

static __device__ __forceinline__ float penalized(float l, u32 c, float rep, float pres,
                                                  float freq) {
    l = l > 0.0f ? __fdiv_rn(l, rep) : __fmul_rn(l, rep);
    return __fsub_rn(l, __fadd_rn(pres, __fmul_rn(freq, __uint2float_rn(c))));
}

// Row r with its penalties and logit biases: a copy in work + r·vocab when its record asks
// for any, else the logits themselves. Biases (distinct tokens, sample.rs checks) are added
// after the penalties, one thread per bias.
static __device__ const float* penalize(const float* x, u32 vocab, const u32* meta,
                                        const u32* rec, float* work, u32* counts, size_t r) {
    const float rep = __uint_as_float(rec[R_REP]), pres = __uint_as_float(rec[R_PRES]);
    const float freq = __uint_as_float(rec[R_FREQ]);
    const bool pen = !(rep == 1.0f && pres == 0.0f && freq == 0.0f) && rec[R_NHIST] != 0;
    const u32 nb = rec[R_NBIAS];
    if (!pen && nb == 0) return x;
    work += r * vocab;
    counts += r * vocab;
    for (u32 i = threadIdx.x; i < vocab; i += SB) work[i] = x[i];
    if (pen) {
        const u32 nh = rec[R_NHIST];
        const u32* h = meta + rec[R_HIST];
        for (u32 j = threadIdx.x; j < nh; j += SB)
            if (h[j] < vocab) atomicAdd(&counts[h[j]], 1u);
        __syncthreads();
        for (u32 j = threadIdx.x; j < nh; j += SB) {
            const u32 t = h[j];
            if (t >= vocab) continue;
            const u32 c = atomicExch(&counts[t], 0u);
            if (c) work[t] = penalized(work[t], c, rep, pres, freq);
        }
    }
    __syncthreads();
    const u32* bias = meta + rec[R_BIAS];
    for (u32 j = threadIdx.x; j < nb; j += SB) {
        const u32 t = bias[2 * j];
        if (t < vocab) work[t] = __fadd_rn(work[t], __uint_as_float(bias[2 * j + 1]));
    }
    __syncthreads();
    return work;
}

// max + ln Σ exp(l − max) over the finite logits, and the n best tokens (every token, total
// order, ties by id) with their logprobs into o[2 ..].
static __device__ double logprobs(Smem& sm, const float* x, u32 vocab, u32 n, u32* o) {
    float m = NEG_INF;
    for (u32 i = threadIdx.x; i < vocab; i += SB)
        if (finite_f(x[i])) m = fmaxf(m, x[i]);
    m = block_max(m, sm.redf);
    double s = 0.0;
    for (u32 i = threadIdx.x; i < vocab; i += SB)
        if (finite_f(x[i])) s += (double)expf(x[i] - m);
    s = block_sum_d(s, sm.redd);
    const double lse = (double)m + log(s);
    u32 got = 0;
    if (n > 0) {
        const Src row = {x, nullptr, nullptr, vocab};
        const Univ all = {true, false, 0, 0, 0.0f, 0.0f};
        const Metric count = {false, 0.0f, 1.0f};
        const Sel k = select(sm, row, all, count, T_COUNT, n, 0.0);
        got = gather(sm, row, true, k.key, k.rank, sm.top_id, sm.top_v, MAX_TOP);
    }
    if (threadIdx.x == 0) {
        // In id order now: an insertion sort by key, stable, leaves ties by id.
        for (u32 a = 1; a < got; ++a)
            for (u32 b = a; b > 0 && key_of(sm.top_v[b]) > key_of(sm.top_v[b - 1]); --b) {
                const float tv = sm.top_v[b];
                const u32 ti = sm.top_id[b];
                sm.top_v[b] = sm.top_v[b - 1];
                sm.top_id[b] = sm.top_id[b - 1];
                sm.top_v[b - 1] = tv;
                sm.top_id[b - 1] = ti;
            }
        o[2] = got;
        for (u32 j = 0; j < got; ++j) {
            o[3 + 2 * j] = sm.top_id[j];
            o[4 + 2 * j] = __float_as_uint((float)((double)sm.top_v[j] - lse));
        }
    }
    return lse;
}

static __device__ __forceinline__ void first_max(float& bv, u32& bi, float v, u32 i) {
    if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
}

// The first largest allowed logit (NaN never; 0 when none exceeds -inf), in thread 0.
static __device__ u32 greedy(Smem& sm, const float* x, u32 vocab, const u32* mask) {
    float bv = NEG_INF;
    u32 bi = 0;
    for (u32 i = threadIdx.x; i < vocab; i += SB)
        if (x[i] > bv && allowed(mask, i)) { bv = x[i]; bi = i; }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        first_max(bv, bi, __shfl_xor_sync(FULL_MASK, bv, o), __shfl_xor_sync(FULL_MASK, bi, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
        sm.redf[warp] = bv;
        sm.scan32[warp] = bi;
    }
    __syncthreads();
    bv = sm.redf[lane];
    bi = sm.scan32[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        first_max(bv, bi, __shfl_xor_sync(FULL_MASK, bv, o), __shfl_xor_sync(FULL_MASK, bi, o));
    return bi;
}

// An uncut row: the first token in id order whose cumulative weight exceeds ⌊u · Σ⌋.
static __device__ u32 walk_ids(Smem& sm, const Src& s, const Metric& w, double u) {
    u64 mine = 0;
    for (u32 i = threadIdx.x; i < s.n; i += SB)
        if (base_in(s, false, i, s.v[i])) mine += metric(w, s.v[i]);
    u64 total;
    block_scan(mine, &total, sm.scan64);
    const u64 target = first_target(T_DRAW, 0, u, total);
    if (threadIdx.x == 0) sm.found = 0;
    u64 run = 0;
    for (u32 base = 0; base < s.n && run <= target; base += SB) {
        const u32 i = base + threadIdx.x;
        u64 q = 0;
        if (i < s.n && base_in(s, false, i, s.v[i])) q = metric(w, s.v[i]);
        u64 tile;
        const u64 lo = run + block_scan(q, &tile, sm.scan64);
        if (q && lo <= target && target < lo + q) sm.found = i;
        run += tile;
    }
    __syncthreads();
    const u32 id = sm.found;
    __syncthreads();
    return id;
}

// A sampled row (temperature > 0): candidates, top-k, top-p, min-p, the draw.
static __device__ u32 draw(Smem& sm, const float* x, u32 vocab, const u32* mask, const u32* rec) {
    const float t = __uint_as_float(rec[R_TEMP]), top_p = __uint_as_float(rec[R_TOPP]);
    const float min_p = __uint_as_float(rec[R_MINP]);
    const u32 top_k = rec[R_TOPK];
    const double u = __hiloint2double((int)rec[R_UHI], (int)rec[R_ULO]);
    const Src row = {x, nullptr, mask, vocab};
    float m = NEG_INF;
    u32 c = 0;
    for (u32 i = threadIdx.x; i < vocab; i += SB)
        if (base_in(row, false, i, x[i])) {
            m = fmaxf(m, x[i]);
            ++c;
        }
    m = block_max(m, sm.redf);
    u32 cnt;
    block_scan(c, &cnt, sm.scan32);
    if (cnt == 0) return 0;
    if (top_p >= 1.0f && min_p <= 0.0f && (top_k == 0 || top_k >= cnt)) {
        const Metric w = {true, m, t};
        return walk_ids(sm, row, w, u);
    }
    Src src = row;
    Univ un = {false, false, 0, 0, 0.0f, m};
    if (top_k > 0 && top_k < cnt) {
        const Metric count = {false, m, 1.0f};
        const Sel k = select(sm, row, un, count, T_COUNT, top_k, 0.0);
        if (top_k <= CAP) {
            gather(sm, row, false, k.key, k.rank, sm.list_id, sm.list_v, CAP);
            src.v = sm.list_v;
            src.id = sm.list_id;
            src.mask = nullptr;
            src.n = top_k;
        } else {
            un.cut = true;
            un.cut_key = k.key;
            un.cut_take = k.rank;
        }
    }
    if (top_p < 1.0f) {
        const Metric w1 = {true, m, 1.0f};
        const Sel p = select(sm, src, un, w1, T_TOPP, 0, (double)top_p);
        un.cut = true;
        un.cut_key = p.key;
        un.cut_take = p.rank;
    }
    un.min_p = min_p;
    const Metric wt = {true, m, t};
    const Sel d = select(sm, src, un, wt, T_DRAW, 0, u);
    return take(sm, src, false, d.key, d.rank);
}

extern "C" __global__ void __launch_bounds__(SB)
    sample_rows(const float* logits, u32 vocab, const u32* meta, float* work, u32* counts,
                u32* out) {
    __shared__ Smem sm;
    const size_t r = blockIdx.x;
    const u32* rec = meta + r * ROW_WORDS;
    u32* o = out + r * OUT_WORDS;
    const float* x = penalize(logits + r * vocab, vocab, meta, rec, work, counts, r);
    const u32 ntop = rec[R_NTOP];
    double lse = 0.0;
    if (ntop != NONE) lse = logprobs(sm, x, vocab, umin(umin(ntop, vocab), MAX_TOP), o);
    else if (threadIdx.x == 0) o[2] = 0;
    const u32* mask = rec[R_MASK] == NONE ? nullptr : meta + rec[R_MASK];
    const float t = __uint_as_float(rec[R_TEMP]);
    const u32 id = t <= 0.0f ? greedy(sm, x, vocab, mask) : draw(sm, x, vocab, mask, rec);
    if (threadIdx.x == 0) {
        o[0] = id;
        o[1] = ntop != NONE ? __float_as_uint((float)((double)x[id] - lse)) : 0u;
    }
}

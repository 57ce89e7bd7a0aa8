// embedding.cu: out[t, :] = dequant(table[ids[t], :]) for a table in any stored format.
//
// Launch: grid (n_ids), block 128. One block per looked-up token: a row is at most a few
// thousand chunks, so 128 threads (4 warps) each dequantize every 128th chunk of 32 elements;
// more threads would idle on small rows, fewer would serialize large ones.
// Shapes: table [vocab, cols] (row_bytes bytes per row), ids [n_ids] (checked < vocab on the
// host), out [n_ids, cols]. Token t = 2 with id 42, cols 576 (18 chunks): thread 5 writes
// out[2*576 + 160 .. 2*576 + 192] from chunk 5 of row 42.
//
// Launched from src/embedding.rs.
// Check: `plumb check --device cuda --op embedding` (every stored format, bit-exact against
// plumb-core's dequantizers).
// Time: not a `plumb bench-ops --device cuda` row (one call per step, a few KB moved); no
// figure measured.

// ids may come from the device step buffer (src/step.rs), written after the host checked
// them; an id ≥ vocab (which the host never lets through) writes zeros instead of reading
// outside the table.
template <int T>
static __device__ void embedding_impl(const u8* table, const u32* ids, float* out, int cols,
                                      int row_bytes, int vocab) {
    const int t = blockIdx.x;
    const u32 id = ids[t];
    const u8* row = table + (size_t)(id < (u32)vocab ? id : 0) * row_bytes;
    float* o = out + (size_t)t * cols;
    for (int c = threadIdx.x; c < n_chunks(cols); c += blockDim.x) {
        float v[32];
        dq32<T>(row, c, cols, v);
        if (id >= (u32)vocab)
            for (int i = 0; i < 32; i++) v[i] = 0.0f;
#pragma unroll
        for (int i = 0; i < 32; i++)
            if (c * 32 + i < cols) o[c * 32 + i] = v[i];
    }
}

#define EMBEDDING(T, name)                                                                  \
    extern "C" __global__ void embedding_##name(const u8* table, const u32* ids, float* out, \
                                                int cols, int row_bytes, int vocab) {       \
        embedding_impl<T>(table, ids, out, cols, row_bytes, vocab);                         \
    }
FOR_EACH_FORMAT(EMBEDDING)

// Does a row's matmul result depend on how many rows share the call?
use plumb_core::{rng::Rng, Bytes, GgmlType, HostWeight};
use plumb_ops::{Backend, CpuBackend};

fn main() {
    let b = CpuBackend::new();
    let mut rng = Rng::new(1);
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_0] {
        let (rows, cols) = (96, 576);
        let vals = rng.normals(rows * cols, 0.05);
        let rb = ty.row_bytes(cols).unwrap();
        let mut bytes = vec![0u8; rows * rb];
        for r in 0..rows {
            plumb_core::quant::quantize_row(
                ty,
                &vals[r * cols..(r + 1) * cols],
                &mut bytes[r * rb..(r + 1) * rb],
            )
            .unwrap();
        }
        let w = b
            .upload_weight(&HostWeight::new("w", ty, rows, cols, Bytes::from_vec(bytes)).unwrap())
            .unwrap();
        let x1 = rng.normals(cols, 1.0);
        let mut xs = Vec::new();
        for n in [1usize, 2, 3, 4, 8, 16, 17] {
            xs.clear();
            for _ in 0..n {
                xs.extend_from_slice(&x1);
            }
            let xb = b.upload(&xs).unwrap();
            let mut out = b.alloc(n * rows).unwrap();
            b.matmul(&w, &xb, n, &mut out).unwrap();
            let mut o = vec![0f32; n * rows];
            b.download(&out, &mut o).unwrap();
            let mut b1 = b.alloc(rows).unwrap();
            b.matmul(&w, &b.upload(&x1).unwrap(), 1, &mut b1).unwrap();
            let mut o1 = vec![0f32; rows];
            b.download(&b1, &mut o1).unwrap();
            let diff = (0..n)
                .map(|t| {
                    (0..rows)
                        .map(|r| (o[t * rows + r] - o1[r]).abs())
                        .fold(0f32, f32::max)
                })
                .fold(0f32, f32::max);
            println!("{ty} n={n}: max |row(n) - row(1)| = {diff:e}");
        }
    }
}

//! Writes the NVRTC image of one kernel file (optionally one format) for an architecture, for
//! reading with `cuobjdump -res-usage` / `-sass` without a GPU:
//! `cargo run --release -p plumb-cuda --example kernel_image -- matvec_q8.cu q4_0 sm_90 /tmp/mv.cubin`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, format, arch, out] = args.as_slice() else {
        return Err("usage: kernel_image FILE FORMAT|all ARCH OUT".into());
    };
    let kf = plumb_cuda::compile::kernel_file(file)?;
    let fmt: Option<&'static str> = match format.as_str() {
        "all" => None,
        f => Some(Box::leak(f.to_string().into_boxed_str())),
    };
    let image = plumb_cuda::compile::compile_checked(kf, fmt, arch)?;
    std::fs::write(out, image)?;
    Ok(())
}

//! Kernel sources, NVRTC compilation and the on-disk kernel cache.
//!
//! Every `.cu` file under `kernels/` is embedded with `include_str!` and compiled by NVRTC the
//! first time one of its kernels is launched. The source NVRTC sees is `common.cuh` (and
//! `quant.cuh` for the files that dequantize weights) followed by the file itself, so the
//! headers are part of what is hashed.
//!
//! The three weight-format files (embedding, matvec_q, matmul) instantiate every kernel for
//! 33 formats (15 GGUF, 18 MLX affine); the 15 GGUF ones took NVRTC ~15 s for matvec_q
//! alone. At run time they are compiled one format at a time (a [`Unit`] with `format: Some("q4_k")` defines `PLUMB_ONE_FORMAT`, which
//! narrows quant.cuh's `FOR_EACH_FORMAT`), so a first launch pays ~1 s for the formats a
//! model uses. [`compile_all`] compiles the whole files, every format at once.
//!
//! For an `sm_XY` target NVRTC emits a cubin (machine code, no JIT at load); for `compute_XY`
//! it emits PTX the driver JIT-compiles. Results are cached under
//! `$PLUMB_HOME/kernels/` (else `~/.cache/plumb/kernels/`) in files named
//! `{file}-{source hash}-{arch}-nvrtc{major}.{minor}.{cubin|ptx}`; each holds a magic, the
//! payload length and its SHA-256, so a truncated or corrupt entry is detected and recompiled.

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use plumb_core::GgmlType;
use sha2::{Digest, Sha256};

use crate::error::{CudaError, Result};

const COMMON: &str = include_str!("../kernels/common.cuh");
const QUANT: &str = include_str!("../kernels/quant.cuh");

/// One op family's kernel file.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    pub name: &'static str,
    pub source: &'static str,
    /// Whether `quant.cuh` is prepended.
    pub uses_quant: bool,
}

/// Every kernel file, in the order `compile_all` reports them.
pub const KERNEL_FILES: &[KernelFile] = &[
    kf("norm.cu", include_str!("../kernels/norm.cu"), false),
    kf("rope.cu", include_str!("../kernels/rope.cu"), false),
    kf(
        "elementwise.cu",
        include_str!("../kernels/elementwise.cu"),
        false,
    ),
    kf("argmax.cu", include_str!("../kernels/argmax.cu"), false),
    kf(
        "attention.cu",
        include_str!("../kernels/attention.cu"),
        false,
    ),
    kf("paged.cu", include_str!("../kernels/paged.cu"), false),
    kf(
        "embedding.cu",
        include_str!("../kernels/embedding.cu"),
        true,
    ),
    kf(
        "attn_decode.cu",
        include_str!("../kernels/attn_decode.cu"),
        false,
    ),
    kf(
        "attn_prefill.cu",
        include_str!("../kernels/attn_prefill.cu"),
        false,
    ),
    kf("matvec_q.cu", include_str!("../kernels/matvec_q.cu"), true),
    kf("matvec_h.cu", include_str!("../kernels/matvec_h.cu"), false),
    kf(
        "matvec_q8.cu",
        include_str!("../kernels/matvec_q8.cu"),
        true,
    ),
    kf("matmul.cu", include_str!("../kernels/matmul.cu"), true),
    kf("mmq.cu", include_str!("../kernels/mmq.cu"), true),
    kf("sample.cu", include_str!("../kernels/sample.cu"), false),
];

const fn kf(name: &'static str, source: &'static str, uses_quant: bool) -> KernelFile {
    KernelFile {
        name,
        source,
        uses_quant,
    }
}

/// The formats `quant.cuh` instantiates (its `FOR_EACH_FORMAT`), with their kernel suffix.
pub const FORMATS: &[(GgmlType, &str)] = &[
    (GgmlType::F32, "f32"),
    (GgmlType::F16, "f16"),
    (GgmlType::BF16, "bf16"),
    (GgmlType::Q4_0, "q4_0"),
    (GgmlType::Q4_1, "q4_1"),
    (GgmlType::Q5_0, "q5_0"),
    (GgmlType::Q5_1, "q5_1"),
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::Q8_1, "q8_1"),
    (GgmlType::Q2K, "q2_k"),
    (GgmlType::Q3K, "q3_k"),
    (GgmlType::Q4K, "q4_k"),
    (GgmlType::Q5K, "q5_k"),
    (GgmlType::Q6K, "q6_k"),
    (GgmlType::Q8K, "q8_k"),
    (GgmlType::Mlx2G32, "mlx2_g32"),
    (GgmlType::Mlx2G64, "mlx2_g64"),
    (GgmlType::Mlx2G128, "mlx2_g128"),
    (GgmlType::Mlx3G32, "mlx3_g32"),
    (GgmlType::Mlx3G64, "mlx3_g64"),
    (GgmlType::Mlx3G128, "mlx3_g128"),
    (GgmlType::Mlx4G32, "mlx4_g32"),
    (GgmlType::Mlx4G64, "mlx4_g64"),
    (GgmlType::Mlx4G128, "mlx4_g128"),
    (GgmlType::Mlx5G32, "mlx5_g32"),
    (GgmlType::Mlx5G64, "mlx5_g64"),
    (GgmlType::Mlx5G128, "mlx5_g128"),
    (GgmlType::Mlx6G32, "mlx6_g32"),
    (GgmlType::Mlx6G64, "mlx6_g64"),
    (GgmlType::Mlx6G128, "mlx6_g128"),
    (GgmlType::Mlx8G32, "mlx8_g32"),
    (GgmlType::Mlx8G64, "mlx8_g64"),
    (GgmlType::Mlx8G128, "mlx8_g128"),
];

/// The formats matvec_q8.cu has dp4a kernels for (its PLUMB_Q8_FORMATS); a one-format unit of
/// that file exists only for these.
pub const Q8_FORMATS: &[&str] = &[
    "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
];

/// The formats mmq.cu has int8 tensor-core kernels for (its PLUMB_MMQ_FORMATS): every format
/// with a dp4a kernel; a one-format unit of that file exists only for these.
pub const MMQ_FORMATS: &[&str] = Q8_FORMATS;

/// The kernel-name suffix of a weight format.
pub fn format_suffix(ty: GgmlType) -> Option<&'static str> {
    FORMATS.iter().find(|(t, _)| *t == ty).map(|(_, s)| *s)
}

/// The entry points the launchers expect in `file` (checked against the compiled image by
/// `compile_all` and the NVRTC test, so a renamed kernel fails without a GPU).
pub fn entry_points(file: &str) -> Vec<String> {
    let per_format = |prefixes: &[&str]| -> Vec<String> {
        prefixes
            .iter()
            .flat_map(|p| FORMATS.iter().map(move |(_, s)| format!("{p}_{s}")))
            .collect()
    };
    let fixed = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
    match file {
        "norm.cu" => fixed(&["rms_norm_f32", "add_rms_norm_f32", "layer_norm_f32"]),
        "rope.cu" => fixed(&["rope_f32", "rope_kv_f32"]),
        "elementwise.cu" => fixed(&[
            "add_f32",
            "add_bias_f32",
            "swiglu_f32",
            "geglu_f32",
            "gelu_f32",
            "scale_f32",
            "softcap_f32",
            "kv_write_f32",
            "quantize_q8",
        ]),
        "argmax.cu" => fixed(&["argmax_f32"]),
        "sample.cu" => fixed(&["sample_rows"]),
        "attention.cu" => fixed(&[
            "attn_fwd_hd64",
            "attn_fwd_hd128",
            "attn_fwd_hd256",
            "attn_combine",
        ]),
        "paged.cu" => fixed(&[
            "attn_paged_hd64",
            "attn_paged_hd128",
            "attn_paged_hd256",
            "attn_paged_merge_hd64",
            "attn_paged_merge_hd128",
            "attn_paged_merge_hd256",
            "kv_write_slots",
        ]),
        "attn_decode.cu" => fixed(&["attn_decode_hd64", "attn_decode_hd128", "attn_decode_hd256"]),
        "attn_prefill.cu" => fixed(&[
            "attn_prefill_hd64",
            "attn_prefill_hd128",
            "attn_prefill_hd256",
        ]),
        "embedding.cu" => per_format(&["embedding"]),
        "matvec_q8.cu" => Q8_FORMATS
            .iter()
            .flat_map(|s| {
                (1..=8)
                    .map(move |n| format!("matvec_q8_n{n}_{s}"))
                    .chain(std::iter::once(format!("matvec_q8_b8_{s}")))
            })
            .collect(),
        "mmq.cu" => MMQ_FORMATS
            .iter()
            .flat_map(|s| {
                (1..=8)
                    .flat_map(move |nt| [format!("mmq_nt{nt}_{s}"), format!("mmq_lb_nt{nt}_{s}")])
            })
            .chain(["quantize_q8_frag".to_string()])
            .collect(),
        "matvec_q.cu" => per_format(&["matvec_warp", "matvec_tiled"]),
        "matvec_h.cu" => ["f16", "bf16"]
            .iter()
            .flat_map(|s| (1..=8).map(move |n| format!("matvec_h_n{n}_{s}")))
            .collect(),
        "matmul.cu" => {
            let mut v = per_format(&["dequant_f16", "dequant_f32", "matmul_tiled"]);
            v.push("to_f16_f32".into());
            v
        }
        _ => Vec::new(),
    }
}

/// The kernel file named `name`.
pub fn kernel_file(name: &str) -> Result<&'static KernelFile> {
    KERNEL_FILES
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| CudaError::Other(format!("no kernel file named {name}")))
}

/// What NVRTC compiles at once: a kernel file, for every format or for one.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    pub file: &'static KernelFile,
    /// A format suffix (`"q4_k"`) for the files that instantiate per format; None for all.
    pub format: Option<&'static str>,
}

impl Unit {
    pub fn whole(file: &'static KernelFile) -> Unit {
        Unit { file, format: None }
    }

    /// `matvec_q.cu` or `matvec_q.cu[q4_k]`.
    pub fn label(&self) -> String {
        match self.format {
            Some(f) => format!("{}[{f}]", self.file.name),
            None => self.file.name.to_string(),
        }
    }

    /// The entry points the unit must contain.
    pub fn entry_points(&self) -> Vec<String> {
        let all = entry_points(self.file.name);
        match self.format {
            None => all,
            Some(f) => {
                let tail = format!("_{f}");
                all.into_iter()
                    .filter(|e| e.ends_with(&tail) || e == "to_f16_f32" || e == "quantize_q8_frag")
                    .collect()
            }
        }
    }

    /// The full text NVRTC compiles.
    pub fn source(&self) -> String {
        let mut s = String::new();
        if let Some(f) = self.format {
            s.push_str(&format!(
                "#define PLUMB_ONE_FORMAT(M) M(T_{}, {f})\n",
                f.to_ascii_uppercase()
            ));
        }
        s.push_str(&full_source(self.file));
        s
    }
}

/// The full text NVRTC compiles for `file` with every format.
pub fn full_source(file: &KernelFile) -> String {
    let mut s = String::with_capacity(COMMON.len() + QUANT.len() + file.source.len() + 64);
    s.push_str("#line 1 \"common.cuh\"\n");
    s.push_str(COMMON);
    if file.uses_quant {
        s.push_str("#line 1 \"quant.cuh\"\n");
        s.push_str(QUANT);
    }
    s.push_str(&format!("#line 1 \"{}\"\n", file.name));
    s.push_str(file.source);
    s
}

/// What `compile_all` (or a first launch) did for one file.
#[derive(Debug, Clone)]
pub struct KernelReport {
    pub file: &'static str,
    /// The one format compiled, for a per-format unit loaded at run time.
    pub format: Option<&'static str>,
    pub arch: String,
    /// "cubin" or "ptx".
    pub kind: &'static str,
    pub bytes: usize,
    pub entry_points: usize,
    pub compile_ms: f64,
    pub nvrtc_version: (i32, i32),
}

/// A compiled image: a cubin for `sm_*` targets, NUL-terminated PTX for `compute_*`.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub bytes: Vec<u8>,
    pub kind: &'static str,
}

/// Fails with [`CudaError::NoNvrtc`] unless libnvrtc can be loaded.
pub fn ensure_nvrtc() -> Result<()> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: is_culib_present only tries to dlopen the candidate library names.
    let present = *PRESENT.get_or_init(|| unsafe { nvrtc_sys::is_culib_present() });
    if present {
        Ok(())
    } else {
        Err(CudaError::NoNvrtc)
    }
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::Other(format!("nvrtcVersion failed: {e:?}")))?;
    Ok((major, minor))
}

/// Checks that `arch` looks like `sm_90`, `sm_90a` or `compute_80`; returns whether it is a
/// real (cubin) target.
fn parse_arch(arch: &str) -> Result<bool> {
    let bad = || CudaError::BadArch { arch: arch.into() };
    let (real, rest) = if let Some(r) = arch.strip_prefix("sm_") {
        (true, r)
    } else if let Some(r) = arch.strip_prefix("compute_") {
        (false, r)
    } else {
        return Err(bad());
    };
    let digits = rest.trim_end_matches(['a', 'f']);
    if digits.len() < 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(real)
}

/// Destroys an NVRTC program on every exit path.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by create_program and is destroyed only here.
        let _ = unsafe { nvrtc::destroy_program(self.0) };
    }
}

fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Compiles one unit for `arch` with NVRTC (no cache).
pub(crate) fn compile_unit(unit: &Unit, arch: &str) -> Result<Image> {
    let real = parse_arch(arch)?;
    ensure_nvrtc()?;
    let file = unit.file;
    let src = CString::new(unit.source())
        .map_err(|_| CudaError::Other(format!("{} contains a NUL byte", file.name)))?;
    let name = CString::new(file.name).unwrap_or_default();
    let fail = |log: String| CudaError::Compile {
        file: file.name,
        arch: arch.into(),
        log,
    };
    let prog =
        Program(nvrtc::create_program(&src, Some(&name)).map_err(|e| fail(format!("{e:?}")))?);
    // -O3 is rejected by NVRTC; device code is optimized by default.
    let opts = [format!("--gpu-architecture={arch}"), "--std=c++17".into()];
    // SAFETY: prog is a live program; the options are valid C strings built by NVRTC's wrapper.
    if let Err(e) = unsafe { nvrtc::compile_program(prog.0, &opts) } {
        // SAFETY: prog is live; the log exists after a failed compilation.
        let log = unsafe { nvrtc::get_program_log(prog.0) }
            .map(|l| c_chars_to_string(&l))
            .unwrap_or_else(|_| format!("{e:?} (no log)"));
        return Err(fail(log));
    }
    let bytes = if real {
        let mut size = 0usize;
        // SAFETY: prog compiled successfully for a real architecture, so it holds a cubin;
        // the buffer is sized from nvrtcGetCUBINSize.
        unsafe {
            nvrtc_sys::nvrtcGetCUBINSize(prog.0, &mut size)
                .result()
                .map_err(|e| fail(format!("nvrtcGetCUBINSize: {e:?}")))?;
            let mut buf = vec![0u8; size];
            nvrtc_sys::nvrtcGetCUBIN(prog.0, buf.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| fail(format!("nvrtcGetCUBIN: {e:?}")))?;
            buf
        }
    } else {
        // SAFETY: prog compiled successfully; get_ptx sizes its buffer itself.
        let ptx = unsafe { nvrtc::get_ptx(prog.0) }.map_err(|e| fail(format!("{e:?}")))?;
        ptx.iter().map(|c| *c as u8).collect()
    };
    Ok(Image {
        bytes,
        kind: if real { "cubin" } else { "ptx" },
    })
}

/// Compiles `file` (every format, or only `format`) for `arch` without touching the cache,
/// checks its entry points, and returns the image (for tests and diagnostics).
pub fn compile_checked(
    file: &'static KernelFile,
    format: Option<&'static str>,
    arch: &str,
) -> Result<Vec<u8>> {
    let unit = Unit { file, format };
    let image = compile_unit(&unit, arch)?;
    check_entries(&unit, arch, &image.bytes)?;
    Ok(image.bytes)
}

fn check_entries(unit: &Unit, arch: &str, image: &[u8]) -> Result<()> {
    match unit
        .entry_points()
        .iter()
        .find(|e| !image_has_symbol(image, e))
    {
        Some(missing) => Err(CudaError::Other(format!(
            "{} compiled for {arch} but has no kernel named {missing}",
            unit.label()
        ))),
        None => Ok(()),
    }
}

/// Whether `name` appears as a symbol string in a compiled image (cubin string table or PTX
/// `.entry`), NUL- or delimiter-terminated so that `add_f32` does not match `add_f32x`.
pub fn image_has_symbol(image: &[u8], name: &str) -> bool {
    let n = name.as_bytes();
    image.windows(n.len() + 1).enumerate().any(|(i, w)| {
        let before_ok = i == 0 || !is_ident(image[i - 1]);
        before_ok && &w[..n.len()] == n && !is_ident(w[n.len()])
    })
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Compiles every kernel file for `arch` (no GPU needed, no cache used) and checks that each
/// file contains the entry points its launcher uses.
pub fn compile_all(arch: &str) -> Result<Vec<KernelReport>> {
    let version = nvrtc_version()?;
    let mut reports = Vec::new();
    for file in KERNEL_FILES {
        let t0 = Instant::now();
        let unit = Unit::whole(file);
        let image = compile_unit(&unit, arch)?;
        let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
        check_entries(&unit, arch, &image.bytes)?;
        let entries = unit.entry_points();
        reports.push(KernelReport {
            file: file.name,
            format: None,
            arch: arch.into(),
            kind: image.kind,
            bytes: image.bytes.len(),
            entry_points: entries.len(),
            compile_ms,
            nvrtc_version: version,
        });
    }
    Ok(reports)
}

// ---------------------------------------------------------------- on-disk cache

const MAGIC: &[u8; 8] = b"PLMBKRN1";

/// `$PLUMB_HOME/kernels`, else `~/.cache/plumb/kernels`; None when neither can be formed.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("PLUMB_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("kernels"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".cache/plumb/kernels"))
}

/// The cache file of `unit` for `arch` under this NVRTC.
pub fn cache_path(dir: &Path, unit: &Unit, arch: &str, nvrtc: (i32, i32)) -> PathBuf {
    let mut h = Sha256::new();
    h.update(unit.source().as_bytes());
    h.update(b"\0--std=c++17");
    let hash: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = match unit.format {
        Some(f) => format!("{}.{f}", unit.file.name.trim_end_matches(".cu")),
        None => unit.file.name.trim_end_matches(".cu").to_string(),
    };
    let ext = if arch.starts_with("sm_") {
        "cubin"
    } else {
        "ptx"
    };
    dir.join(format!(
        "{stem}-{hash}-{arch}-nvrtc{}.{}.{ext}",
        nvrtc.0, nvrtc.1
    ))
}

/// The payload of a cache entry, or None if it is missing, truncated or corrupt.
pub fn read_cache_entry(path: &Path) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 48 || &data[..8] != MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(data[8..16].try_into().ok()?) as usize;
    let payload = data.get(48..)?;
    if payload.len() != len || Sha256::digest(payload).as_slice() != &data[16..48] {
        return None;
    }
    Some(payload.to_vec())
}

/// Writes a cache entry atomically (temporary file, then rename). Failures are returned but
/// callers may ignore them: the cache only saves compile time.
pub fn write_cache_entry(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut data = Vec::with_capacity(payload.len() + 48);
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    data.extend_from_slice(&Sha256::digest(payload));
    data.extend_from_slice(payload);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)
}

/// The image of `unit` for `arch`: from the cache when a valid entry exists (and `use_cache`),
/// else compiled and stored. Returns whether it came from the cache.
pub(crate) fn cached_image(unit: &Unit, arch: &str, use_cache: bool) -> Result<(Image, bool)> {
    let version = nvrtc_version()?;
    let kind = if parse_arch(arch)? { "cubin" } else { "ptx" };
    let path = cache_dir().map(|d| cache_path(&d, unit, arch, version));
    if let (true, Some(p)) = (use_cache, &path) {
        if let Some(bytes) = read_cache_entry(p) {
            return Ok((Image { bytes, kind }, true));
        }
    }
    let image = compile_unit(unit, arch)?;
    if let Some(p) = &path {
        let _ = write_cache_entry(p, &image.bytes); // best effort: see write_cache_entry
    }
    Ok((image, false))
}

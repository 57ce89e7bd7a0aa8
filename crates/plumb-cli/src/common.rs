//! Options shared by the commands that load a model, and the backend dispatch.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;
use plumb_engine::store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The frozen reference ops: slow, obviously correct.
    Reference,
    /// Optimized CPU kernels (SIMD, 8-bit activations, a persistent thread pool).
    Cpu,
    /// NVIDIA GPU kernels compiled at first use by NVRTC.
    Cuda,
    /// Portable GPU kernels: WGSL compute shaders on wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// llama.cpp's CPU arithmetic mirrored (f16 KV, 8-bit activations): for comparing outputs
    /// token for token.
    Ggml,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Reference => "reference",
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Ggml => "ggml",
        }
    }
}

/// Where and how the ops run: `--device`, `--backend`, `--threads`, `--variant`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// `cpu`, `cuda` or `cuda:N` (the N-th NVIDIA GPU), `wgpu` or `wgpu:N` (the N-th adapter
    /// wgpu finds: Vulkan, Metal or DX12).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
    /// The implementation of the ops [default: cpu on the CPU, the device's on a GPU].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Worker threads of the CPU backend [default: every core].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Pick a kernel variant, e.g. `--variant matvec=tiled` (repeatable; CUDA, or wgpu's
    /// reduce=subgroup|workgroup and dot=native|soft).
    #[arg(long = "variant", value_name = "OP=NAME")]
    pub variants: Vec<String>,
    /// Use the variants `plumb tune` chose for this GPU (explicit --variant still wins).
    #[arg(long)]
    pub autotune: bool,
}

/// A resolved backend choice.
#[derive(Debug, Clone)]
pub enum Choice {
    Reference,
    Cpu {
        threads: Option<usize>,
    },
    Cuda {
        ordinal: usize,
        variants: Vec<(String, String)>,
        autotune: bool,
    },
    Ggml {
        threads: Option<usize>,
    },
    Wgpu {
        ordinal: usize,
        variants: Vec<(String, String)>,
        autotune: bool,
    },
}

impl Choice {
    pub fn kind(&self) -> BackendKind {
        match self {
            Choice::Reference => BackendKind::Reference,
            Choice::Cpu { .. } => BackendKind::Cpu,
            Choice::Cuda { .. } => BackendKind::Cuda,
            Choice::Ggml { .. } => BackendKind::Ggml,
            Choice::Wgpu { .. } => BackendKind::Wgpu,
        }
    }
}

impl DeviceArgs {
    /// The GPU `--device` names, with the backend that drives it, or None for the CPU.
    pub fn gpu(&self) -> Result<Option<(BackendKind, usize)>> {
        let d = self.device.as_str();
        let numbered = |prefix: &str| d.strip_prefix(prefix).map(str::parse::<usize>);
        match d {
            "cpu" => Ok(None),
            "cuda" | "gpu" => Ok(Some((BackendKind::Cuda, 0))),
            "wgpu" => Ok(Some((BackendKind::Wgpu, 0))),
            _ => match (numbered("cuda:"), numbered("wgpu:")) {
                (Some(Ok(n)), _) => Ok(Some((BackendKind::Cuda, n))),
                (_, Some(Ok(n))) => Ok(Some((BackendKind::Wgpu, n))),
                _ => anyhow::bail!("unknown device {d:?}: use cpu, cuda, cuda:N, wgpu or wgpu:N"),
            },
        }
    }

    pub fn choice(&self) -> Result<Choice> {
        self.choice_with(self.backend)
    }

    /// The choice for an explicit backend kind (the device still gives the GPU number).
    pub fn choice_with(&self, backend: Option<BackendKind>) -> Result<Choice> {
        let gpu = self.gpu()?;
        let kind = backend.unwrap_or(gpu.map_or(BackendKind::Cpu, |(k, _)| k));
        if let Some((k, _)) = gpu.filter(|&(k, _)| k != kind) {
            anyhow::bail!("--device {} needs --backend {}", self.device, k.name());
        }
        let ordinal = gpu.map(|(_, n)| n);
        let variants = self
            .variants
            .iter()
            .map(|v| {
                v.split_once('=')
                    .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                    .ok_or_else(|| {
                        anyhow::anyhow!("--variant {v:?}: write OP=NAME, e.g. matvec=tiled")
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(match kind {
            BackendKind::Reference => Choice::Reference,
            BackendKind::Cpu => Choice::Cpu {
                threads: self.threads,
            },
            BackendKind::Cuda => Choice::Cuda {
                ordinal: ordinal.unwrap_or(0),
                variants,
                autotune: self.autotune,
            },
            BackendKind::Ggml => Choice::Ggml {
                threads: self.threads,
            },
            BackendKind::Wgpu => Choice::Wgpu {
                ordinal: ordinal.unwrap_or(0),
                variants,
                autotune: self.autotune,
            },
        })
    }
}

pub fn cpu_backend(threads: Option<usize>) -> Result<plumb_ops::CpuBackend> {
    Ok(match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => plumb_ops::CpuBackend::with_threads(n),
        None => plumb_ops::CpuBackend::new(),
    })
}

pub fn ggml_backend(threads: Option<usize>) -> Result<plumb_ops::GgmlBackend> {
    let mut b = plumb_ops::GgmlBackend::new();
    match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => b.threads = n,
        None => {}
    }
    Ok(b)
}

/// The GPU backend with `variants` selected as they are: for `plumb check`, which is what
/// checks them, and `plumb tune`.
pub fn cuda_backend_unchecked(
    ordinal: usize,
    variants: &[(String, String)],
) -> Result<plumb_cuda::CudaBackend> {
    let b = open_cuda(ordinal)?;
    for (op, name) in variants {
        b.set_variant(op, name)
            .with_context(|| format!("--variant {op}={name}"))?;
    }
    Ok(b)
}

/// The GPU backend with the variants `plumb tune` chose (when `autotune`), then the explicit
/// `--variant`s on top. An explicit variant must have passed `plumb check` on this GPU with
/// these kernels (plumb_cuda::CheckedVariants); one that never did is refused.
pub fn cuda_backend_tuned(
    ordinal: usize,
    variants: &[(String, String)],
    autotune: bool,
) -> Result<plumb_cuda::CudaBackend> {
    let b = open_cuda(ordinal)?;
    if autotune {
        for (op, name) in crate::cmd::tune::load_tuned(&b.info().name)? {
            b.set_variant(&op, &name)
                .with_context(|| format!("tuned variant {op}={name}"))?;
        }
    }
    if !variants.is_empty() {
        let gpu = b.info().name.clone();
        let record = plumb_cuda::checked::checked_dir()
            .map(|d| plumb_cuda::CheckedVariants::load(&d, &gpu))
            .unwrap_or_else(|| plumb_cuda::CheckedVariants::new(&gpu));
        for (op, name) in variants {
            b.set_variant(op, name)
                .with_context(|| format!("--variant {op}={name}"))?;
            if !record.is_checked(op, name) {
                anyhow::bail!(
                    "--variant {op}={name} has not passed `plumb check` on {gpu} with this \
                     build's kernels; run `plumb check --device cuda --variant {op}={name}` \
                     (or `plumb check --device cuda` for every variant) first"
                );
            }
        }
    }
    Ok(b)
}

fn open_cuda(ordinal: usize) -> Result<plumb_cuda::CudaBackend> {
    let b = plumb_cuda::CudaBackend::new(ordinal).context("opening the GPU")?;
    let i = b.info();
    eprintln!(
        "plumb: {} ({}, {} SMs, {:.0} GiB)",
        i.name,
        b.arch(),
        i.sm_count,
        i.total_memory as f64 / (1u64 << 30) as f64
    );
    Ok(b)
}

/// The wgpu backend on adapter `ordinal` with the variants `plumb tune` chose (when
/// `autotune`), then `variants` on top. Each must be one the adapter can run: a variant that
/// would fall back is refused, so the figures name what ran.
pub fn wgpu_backend(
    ordinal: usize,
    variants: &[(String, String)],
    autotune: bool,
) -> Result<plumb_wgpu::WgpuBackend> {
    let mut want = plumb_wgpu::Variants::default();
    let mut chosen = Vec::new();
    if autotune {
        let backends = plumb_wgpu::Options::default().backends;
        let adapters = plumb_wgpu::adapters(backends);
        let Some(info) = adapters.get(ordinal) else {
            anyhow::bail!("--autotune: wgpu finds no adapter wgpu:{ordinal}");
        };
        chosen = crate::cmd::tune::load_tuned(&info.name)?;
    }
    chosen.extend(variants.iter().cloned());
    for (op, name) in &chosen {
        want.set(op, name)
            .with_context(|| format!("--variant {op}={name}"))?;
    }
    let b = plumb_wgpu::WgpuBackend::with_options(plumb_wgpu::Options {
        ordinal,
        variants: want,
        ..Default::default()
    })
    .context("opening the wgpu adapter")?;
    let got = b.variants();
    if !chosen.is_empty() && got != want {
        anyhow::bail!(
            "{} cannot run {}: it runs {}",
            b.describe(),
            want.describe(),
            got.describe()
        );
    }
    eprintln!("plumb: {} ({})", b.describe(), got.describe());
    Ok(b)
}

/// Builds the backend of `$choice` and evaluates `$body` with it bound to `$b`, whatever its type.
macro_rules! with_backend {
    ($choice:expr, |$b:ident| $body:expr) => {{
        match $choice {
            $crate::common::Choice::Reference => {
                let $b = plumb_ops::ReferenceBackend::default();
                $body
            }
            $crate::common::Choice::Cpu { threads } => {
                let $b = $crate::common::cpu_backend(*threads)?;
                $body
            }
            $crate::common::Choice::Cuda {
                ordinal,
                variants,
                autotune,
            } => {
                let $b = $crate::common::cuda_backend_tuned(*ordinal, variants, *autotune)?;
                $body
            }
            $crate::common::Choice::Ggml { threads } => {
                let $b = $crate::common::ggml_backend(*threads)?;
                $body
            }
            $crate::common::Choice::Wgpu {
                ordinal,
                variants,
                autotune,
            } => {
                let $b = $crate::common::wgpu_backend(*ordinal, variants, *autotune)?;
                $body
            }
        }
    }};
}
pub(crate) use with_backend;

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// GGUF model file, or a Hugging Face or MLX model directory [default:
    /// SmolLM2-135M-Instruct Q4_1, fetched on first use]
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Re-encode the model's matrices at load (in-situ quantization, no file written):
    /// q4_0, q4_1, q5_0, q5_1, q8_0, q2_k .. q6_k, q4_k_m, q5_k_m, f16, bf16
    #[arg(long, value_name = "FMT")]
    pub quantize: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl ModelArgs {
    /// The `--quantize` recipe, if one was given.
    pub fn recipe(&self) -> Result<Option<plumb_model::quantize::Recipe>> {
        self.quantize
            .as_deref()
            .map(plumb_model::quantize::Recipe::parse)
            .transpose()
            .context("--quantize")
    }
}

/// The model path, fetching the default model (with messages on stderr) when none is given;
/// says on stderr what kind of model it found.
pub fn model_path(model: Option<&Path>) -> Result<PathBuf> {
    let path = store::resolve_model(model, &mut |msg| eprintln!("plumb: {msg}"))
        .context("no model to load")?;
    let kind = store::detect(&path)?;
    eprintln!("plumb: {} is a {}", path.display(), kind.describe());
    Ok(path)
}

/// Loads a session on the chosen backend and runs `$body` with it bound to `$s`.
macro_rules! with_session {
    ($args:expr, $ctx:expr, |$s:ident| $body:expr) => {{
        let path = $crate::common::model_path($args.model.as_deref())?;
        let recipe = $args.recipe()?;
        let choice = $args.device.choice()?;
        $crate::common::with_backend!(&choice, |backend| {
            let t0 = std::time::Instant::now();
            #[allow(unused_mut)]
            let mut $s = anyhow::Context::with_context(
                plumb_engine::Session::load_quantized(&path, backend, $ctx, recipe),
                || format!("loading {}", path.display()),
            )?;
            $crate::common::loaded(&path, choice.kind(), t0);
            $body
        })
    }};
}
pub(crate) use with_session;

pub fn loaded(path: &Path, kind: BackendKind, t0: std::time::Instant) {
    eprintln!(
        "plumb: loaded {} on {} in {:.2} s",
        path.display(),
        kind.name(),
        t0.elapsed().as_secs_f64()
    );
}

/// Sampling options shared by `run` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy (always the most likely token).
    #[arg(long = "temp", default_value_t = 0.8, value_name = "T")]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40, value_name = "K")]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1 = off).
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    pub top_p: f32,
    /// Drop tokens less likely than P × the most likely one (0 = off).
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    pub min_p: f32,
    /// Penalize tokens seen in the last --repeat-last-n tokens (1 = off).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub repeat_penalty: f32,
    /// Subtracted from the logit of every token already seen.
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit for each time it was seen.
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties consider (0 = all).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub repeat_last_n: usize,
    /// Seed for reproducible sampling (default: from the clock).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<plumb_engine::SamplingParams> {
        let p = plumb_engine::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_window: self.repeat_last_n,
            seed: self.seed,
            logit_bias: Vec::new(),
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

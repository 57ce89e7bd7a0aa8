//! Bring-up: finding the driver and the GPU, the stream every op queues on, the kernel
//! module cache and the variant registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::compile::{self, KernelReport};
use crate::error::{CudaError, DriverContext, Result};
use crate::launch::poisoned;
use crate::registry;
use crate::state::{Graphs, Pending, Q8State, Scratch, StepState};

/// What the driver reports about the GPU.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub sm_count: usize,
    pub total_memory: usize,
    /// Driver API version, e.g. 13000 for CUDA 13.0.
    pub driver_version: i32,
}

impl CudaBackend {
    /// Returns `slot`'s buffer, reallocated (zeroed) if shorter than `len`. A reallocation
    /// moves the buffer, so it bumps the epoch (recorded steps holding the old address are
    /// dropped) and is refused while a step is being recorded (src/step.rs).
    pub(crate) fn ensure_len<
        'a,
        T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits,
    >(
        &self,
        slot: &'a mut Option<CudaSlice<T>>,
        len: usize,
    ) -> Result<&'a mut CudaSlice<T>> {
        if slot.as_ref().is_none_or(|s| s.len() < len) {
            if self.is_capturing() {
                return Err(CudaError::Other(format!(
                    "scratch of {len} elements needed while recording a step"
                )));
            }
            *slot = None; // free first: the old buffer may be most of the memory we need
            let buf = self
                .stream
                .alloc_zeros::<T>(len.max(1))
                .ctx(|| format!("allocating {len} elements of scratch"))?;
            *slot = Some(buf);
            self.bump_epoch();
        }
        slot.as_mut()
            .ok_or_else(|| CudaError::Other("scratch allocation vanished".into()))
    }
}

/// The CUDA backend: one GPU, one stream, kernels compiled by NVRTC at first use.
pub struct CudaBackend {
    pub(crate) stream: Arc<CudaStream>,
    info: DeviceInfo,
    arch: String,
    use_cache: bool,
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
    funcs: Mutex<HashMap<String, CudaFunction>>,
    reports: Mutex<Vec<(KernelReport, bool)>>,
    blas: OnceLock<std::result::Result<CudaBlas, String>>,
    variants: Mutex<HashMap<&'static str, &'static str>>,
    pub(crate) scratch: Mutex<Scratch>,
    pub(crate) step: Mutex<StepState>,
    pub(crate) graphs: Mutex<Graphs>,
    pub(crate) q8: Mutex<Q8State>,
    /// Launches held back inside a step (src/defer.rs).
    pub(crate) pending: Mutex<Vec<Pending>>,
    /// Whether the stream is being captured into a recording (src/step.rs).
    pub(crate) capturing: AtomicBool,
    /// Inside `matmul_many`: q8 matvecs are held back so that those sharing x merge.
    pub(crate) grouping: AtomicBool,
    /// Bumped whenever a buffer a recording may hold moves (src/step.rs).
    pub(crate) epoch: AtomicU64,
    _ctx: Arc<CudaContext>,
}

/// `PLUMB_CUDA_RECORD=0` turns the recording of decode steps off (A/B timing, and an escape
/// hatch should a driver misbehave under stream capture).
fn record_from_env() -> bool {
    std::env::var("PLUMB_CUDA_RECORD").map_or(true, |v| v != "0")
}

fn cublas_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

impl CudaBackend {
    /// Opens GPU `ordinal`. Fails (never panics) when there is no driver, no GPU, or no such
    /// ordinal; NVRTC is only needed at the first kernel launch.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        // SAFETY: only tries to dlopen the candidate library names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        cudarc::driver::result::init().map_err(|e| CudaError::NoDevice(format!("{e}")))?;
        let count = CudaContext::device_count().ctx(|| "counting GPUs".into())? as usize;
        if count == 0 {
            return Err(CudaError::NoDevice("device count is 0".into()));
        }
        if ordinal >= count {
            return Err(CudaError::BadOrdinal { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).ctx(|| format!("opening GPU {ordinal}"))?;
        // SAFETY: every buffer of this backend is used on its one stream only, so the
        // per-buffer events cudarc would record to order streams are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().ctx(|| "creating a stream".into())?;
        let info = device_info(&ctx, ordinal)?;
        let (major, minor) = info.compute_capability;
        let arch = format!("sm_{major}{minor}");
        let mut defaults: HashMap<&'static str, &'static str> = registry::FAMILIES
            .iter()
            .map(|f| (f.name, f.default_variant()))
            .collect();
        if !cublas_present() {
            defaults.insert("prefill", "tiled");
        }
        Ok(CudaBackend {
            stream,
            info,
            arch,
            use_cache: true,
            modules: Mutex::new(HashMap::new()),
            funcs: Mutex::new(HashMap::new()),
            reports: Mutex::new(Vec::new()),
            blas: OnceLock::new(),
            variants: Mutex::new(defaults),
            scratch: Mutex::new(Scratch::default()),
            step: Mutex::new(StepState::default()),
            graphs: Mutex::new(Graphs::new(record_from_env())),
            q8: Mutex::new(Q8State::default()),
            pending: Mutex::new(Vec::new()),
            capturing: AtomicBool::new(false),
            grouping: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            _ctx: ctx,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub(crate) fn ctx(&self) -> &Arc<CudaContext> {
        &self._ctx
    }

    /// The architecture kernels are compiled for (`sm_90` on an H100).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Bypasses the on-disk kernel cache (always recompile; results are still written).
    pub fn set_use_cache(&mut self, on: bool) {
        self.use_cache = on;
    }

    /// Selects variant `name` of `op` (e.g. `("matvec", "tiled")`); see [`registry`].
    pub fn set_variant(&self, op: &str, name: &str) -> Result<()> {
        let fam = registry::family(op).ok_or_else(|| CudaError::UnknownVariant {
            op: op.into(),
            name: name.into(),
            known: format!(
                "ops with variants are {}",
                registry::FAMILIES
                    .iter()
                    .map(|f| f.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        let v =
            fam.variant_names()
                .find(|v| *v == name)
                .ok_or_else(|| CudaError::UnknownVariant {
                    op: op.into(),
                    name: name.into(),
                    known: fam.variant_names().collect::<Vec<_>>().join(", "),
                })?;
        if fam.name == "prefill" && v == "cublas" && !cublas_present() {
            return Err(CudaError::NoCublas);
        }
        self.variants
            .lock()
            .map_err(|_| poisoned())?
            .insert(fam.name, v);
        Ok(())
    }

    /// The selected variant of `op`.
    pub fn variant(&self, op: &str) -> Option<&'static str> {
        self.variants.lock().ok()?.get(op).copied()
    }

    /// Kernel files loaded so far: their compile reports and whether they came from the cache.
    pub fn kernel_reports(&self) -> Vec<(KernelReport, bool)> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The kernel `name` of `file` (compiled for one weight `format` where the file has
    /// per-format kernels), compiling and loading it at first use.
    pub(crate) fn func(
        &self,
        file: &'static str,
        format: Option<&'static str>,
        name: &str,
    ) -> Result<CudaFunction> {
        if let Some(f) = self.funcs.lock().map_err(|_| poisoned())?.get(name) {
            return Ok(f.clone());
        }
        let module = self.module(file, format)?;
        let f = module
            .load_function(name)
            .ctx(|| format!("looking up kernel {name} in {file}"))?;
        self.funcs
            .lock()
            .map_err(|_| poisoned())?
            .insert(name.to_string(), f.clone());
        Ok(f)
    }

    fn module(&self, file: &'static str, format: Option<&'static str>) -> Result<Arc<CudaModule>> {
        let unit = compile::Unit {
            file: compile::kernel_file(file)?,
            format,
        };
        let label = unit.label();
        let mut modules = self.modules.lock().map_err(|_| poisoned())?;
        if let Some(m) = modules.get(&label) {
            return Ok(m.clone());
        }
        let t0 = std::time::Instant::now();
        let (image, cached) = compile::cached_image(&unit, &self.arch, self.use_cache)?;
        let kind = image.kind;
        let bytes = image.bytes.len();
        let loaded = match self._ctx.load_module(Ptx::from_binary(image.bytes)) {
            Ok(m) => m,
            // A cached image the driver rejects is recompiled once, bypassing the cache.
            Err(_) if cached => {
                let (fresh, _) = compile::cached_image(&unit, &self.arch, false)?;
                self._ctx
                    .load_module(Ptx::from_binary(fresh.bytes))
                    .ctx(|| format!("loading {label} compiled for {}", self.arch))?
            }
            Err(e) => {
                return Err(CudaError::Driver {
                    what: format!("loading {label} compiled for {}", self.arch),
                    source: e,
                })
            }
        };
        let report = KernelReport {
            file: unit.file.name,
            format,
            arch: self.arch.clone(),
            kind,
            bytes,
            entry_points: unit.entry_points().len(),
            compile_ms: t0.elapsed().as_secs_f64() * 1e3,
            nvrtc_version: compile::nvrtc_version().unwrap_or((0, 0)),
        };
        if let Ok(mut r) = self.reports.lock() {
            r.push((report, cached));
        }
        modules.insert(label, loaded.clone());
        Ok(loaded)
    }

    /// The cuBLAS handle, created on first use.
    pub(crate) fn blas(&self) -> Result<&CudaBlas> {
        let b = self.blas.get_or_init(|| {
            if !cublas_present() {
                return Err(CudaError::NoCublas.to_string());
            }
            CudaBlas::new(self.stream.clone())
                .map_err(|e| format!("creating a cuBLAS handle: {e:?}"))
        });
        b.as_ref().map_err(|e| CudaError::Other(e.clone()))
    }
}

fn device_info(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<DeviceInfo> {
    let name = ctx.name().ctx(|| "reading the GPU name".into())?;
    let compute_capability = ctx
        .compute_capability()
        .ctx(|| "reading the compute capability".into())?;
    let sm_count = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .ctx(|| "reading the SM count".into())? as usize;
    let total_memory = ctx.total_mem().ctx(|| "reading the memory size".into())?;
    let mut driver_version = 0;
    // SAFETY: the driver is loaded and initialized (CudaContext::new succeeded); the pointer
    // is valid for one write.
    let _ = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_version) };
    Ok(DeviceInfo {
        ordinal,
        name,
        compute_capability,
        sm_count,
        total_memory,
        driver_version,
    })
}

//! Bring-up: the adapter (Vulkan, Metal or DX12, whichever the platform has), the device with
//! the features the variants use, and the error sink. wgpu reports validation errors to a
//! handler instead of returning them; the backend keeps them and returns the first as an
//! error from the op that submits next, so nothing panics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use plumb_ops::{OpError, Result};

use crate::buffer::{Ids, Tracked};
use crate::encoder::{Ctx, Pending};
use crate::pipeline::Pipelines;
use crate::rope::FreqTables;
use crate::scratch::{Scratch, Staging};
use crate::variant::{Dot, Reduce, Variants};

/// What to open.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which adapter, in the order [`adapters`] lists them.
    pub ordinal: usize,
    /// The variants wanted; one the adapter cannot run falls back to the portable one.
    pub variants: Variants,
    /// Which graphics APIs to look on (default: `WGPU_BACKEND`, else all).
    pub backends: wgpu::Backends,
    /// The most bytes of one weight in one buffer (default, and at most: what the adapter
    /// binds); a larger weight is split by rows into several (src/buffer.rs). Smaller values
    /// are for testing the split.
    pub weight_part_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ordinal: 0,
            variants: Variants::default(),
            backends: wgpu::Backends::from_env().unwrap_or_default(),
            weight_part_bytes: None,
        }
    }
}

/// The portable GPU backend: WGSL compute shaders on wgpu.
pub struct WgpuBackend {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    /// Options::weight_part_bytes, within the adapter's limits.
    pub(crate) weight_part_bytes: u64,
    variants: Variants,
    pub(crate) ids: Arc<Ids>,
    pipes: Pipelines,
    pub(crate) pending: Mutex<Pending>,
    pub(crate) scratch: Mutex<Scratch>,
    pub(crate) staging: Staging,
    pub(crate) freqs: Mutex<FreqTables>,
    errors: Arc<Mutex<Vec<String>>>,
}

/// What no adapter means, and what to do about it.
const NO_ADAPTER: &str = "no GPU adapter: wgpu found no Vulkan, Metal or DX12 device. On Linux \
     without a GPU driver, Mesa's software Vulkan driver works (`apt-get install \
     mesa-vulkan-drivers`, or scripts/test's copy in .deps/vulkan with VK_ICD_FILENAMES set)";

/// The adapters wgpu finds on `backends`, in the order `--device wgpu:N` numbers them.
pub fn adapters(backends: wgpu::Backends) -> Vec<wgpu::AdapterInfo> {
    let instance = instance(backends);
    pollster::block_on(instance.enumerate_adapters(backends))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

impl WgpuBackend {
    /// The `ordinal`-th adapter with the default variants.
    pub fn new(ordinal: usize) -> Result<Self> {
        WgpuBackend::with_options(Options {
            ordinal,
            ..Options::default()
        })
    }

    pub fn with_options(o: Options) -> Result<Self> {
        let instance = instance(o.backends);
        let mut found = pollster::block_on(instance.enumerate_adapters(o.backends));
        if found.is_empty() {
            return Err(OpError::Device(NO_ADAPTER.into()));
        }
        if o.ordinal >= found.len() {
            let names: Vec<String> = found.iter().map(|a| describe(&a.get_info())).collect();
            return Err(OpError::Device(format!(
                "no adapter wgpu:{}: wgpu found {} ({})",
                o.ordinal,
                found.len(),
                names.join("; ")
            )));
        }
        let adapter = found.swap_remove(o.ordinal);
        let mut variants = o.variants;
        let mut features = wgpu::Features::empty();
        if variants.reduce == Reduce::Subgroup {
            if adapter.features().contains(wgpu::Features::SUBGROUP) {
                features |= wgpu::Features::SUBGROUP;
            } else {
                variants.reduce = Reduce::Workgroup;
            }
        }
        let packed = wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct;
        if !instance.wgsl_language_features().contains(packed) {
            variants.dot = Dot::Soft;
        }
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("plumb"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| OpError::Device(format!("opening {}: {e}", describe(&info))))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut errs = sink.lock().unwrap_or_else(|p| p.into_inner());
            errs.push(format!("device lost ({reason:?}): {msg}"));
        });
        let ids = Arc::new(Ids::default());
        let bind_max = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size);
        // A multiple of 4: weights are words.
        let weight_part_bytes = o.weight_part_bytes.unwrap_or(bind_max).clamp(4, bind_max) & !3;
        Ok(WgpuBackend {
            pending: Mutex::new(Pending::new(&device, &limits, &ids)),
            scratch: Mutex::new(Scratch::default()),
            staging: Staging::default(),
            freqs: Mutex::new(HashMap::new()),
            pipes: Pipelines::default(),
            device,
            queue,
            info,
            limits,
            weight_part_bytes,
            variants,
            ids,
            errors,
        })
    }

    /// The adapter in use.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The variants in use (the ones asked for, less what the adapter cannot run).
    pub fn variants(&self) -> Variants {
        self.variants
    }

    /// One line naming the adapter: name, API, kind, driver.
    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Command submissions so far: a decode step inside `begin_step`/`end_step` is one.
    pub fn submissions(&self) -> u64 {
        self.lock_pending().submissions
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            device: &self.device,
            queue: &self.queue,
            pipes: &self.pipes,
            variants: self.variants,
            ids: &self.ids,
        }
    }

    pub(crate) fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the pending work, then submits unless a step is open, and returns the first
    /// error wgpu reported meanwhile.
    pub(crate) fn op<R>(&self, f: impl FnOnce(&mut Pending, &Ctx<'_>) -> Result<R>) -> Result<R> {
        let ctx = self.ctx();
        let mut p = self.lock_pending();
        let r = f(&mut p, &ctx);
        let submitted = if p.in_step { Ok(()) } else { p.submit(&ctx) };
        drop(p);
        let r = r?;
        submitted?;
        self.check_errors()?;
        Ok(r)
    }

    /// The first error wgpu reported since the last call, as an op error.
    pub(crate) fn check_errors(&self) -> Result<()> {
        let mut errs = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errs.is_empty() {
            return Ok(());
        }
        let first = errs.remove(0);
        let more = errs.len();
        errs.clear();
        Err(OpError::Device(if more > 0 {
            format!("wgpu: {first} (and {more} more)")
        } else {
            format!("wgpu: {first}")
        }))
    }

    /// A device buffer of `bytes` (at least 4) with `usage`, checked against the adapter's
    /// limits first: `what` names it in the error.
    pub(crate) fn buffer(
        &self,
        bytes: u64,
        usage: wgpu::BufferUsages,
        what: &str,
        init: Option<&[u8]>,
    ) -> Result<Tracked> {
        let size = bytes.max(4).next_multiple_of(4);
        let max = self
            .limits
            .max_buffer_size
            .min(self.limits.max_storage_buffer_binding_size);
        if size > max {
            return Err(OpError::Unsupported {
                op: "alloc",
                what: format!(
                    "{what} of {:.1} MiB: {} binds at most {:.1} MiB",
                    size as f64 / (1 << 20) as f64,
                    self.info.name,
                    max as f64 / (1 << 20) as f64
                ),
            });
        }
        let init = init.filter(|d| !d.is_empty());
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: init.is_some(),
        });
        if let Some(data) = init {
            buf.slice(..data.len() as u64)
                .get_mapped_range_mut()
                .map_err(|e| OpError::Device(format!("filling {what}: {e}")))?
                .copy_from_slice(data);
            buf.unmap();
        }
        Ok(Tracked::new(buf, &self.ids))
    }
}

fn describe(i: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, {} {})",
        i.name, i.backend, i.device_type, i.driver, i.driver_info
    )
}

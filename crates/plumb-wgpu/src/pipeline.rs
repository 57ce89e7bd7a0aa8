//! Shader modules, compute pipelines and their bind group layouts, each made once (at first
//! use) and kept. Every pipeline's bindings are: 0, the launch's parameters (a uniform slot at
//! a dynamic offset, src/encoder.rs); 1, the step's data (token ids, positions, slots, block
//! tables); then the op's buffers in the order its launcher lists them, from 2.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use plumb_ops::{OpError, Result};

use crate::shaders::Shader;
use crate::variant::Variants;

/// Bytes of the parameters a launch may pass (16 words).
pub(crate) const PARAMS_BYTES: u64 = 64;

/// One entry point with its pipeline constants.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Kernel {
    pub(crate) shader: Shader,
    pub(crate) entry: &'static str,
    pub(crate) constants: Vec<(&'static str, f64)>,
}

impl Kernel {
    pub(crate) fn new(shader: Shader, entry: &'static str) -> Kernel {
        Kernel {
            shader,
            entry,
            constants: Vec::new(),
        }
    }

    pub(crate) fn with(mut self, constants: &[(&'static str, f64)]) -> Kernel {
        self.constants.extend_from_slice(constants);
        self
    }

    fn key(&self) -> (&'static str, &'static str, Vec<(&'static str, u64)>) {
        let c = self.constants.iter().map(|(n, v)| (*n, v.to_bits()));
        (self.shader.name, self.entry, c.collect())
    }
}

/// A compute pipeline and the layout of its bind group.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) id: u64,
}

type PipeKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

/// The modules and pipelines made so far.
#[derive(Default)]
pub(crate) struct Pipelines {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipes: Mutex<HashMap<PipeKey, Arc<Pipe>>>,
}

impl Pipelines {
    /// The pipeline of `k` whose op buffers (bindings 2..) are writable as `writable` says.
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        variants: Variants,
        k: &Kernel,
        writable: &[bool],
    ) -> Result<Arc<Pipe>> {
        let key = k.key();
        let mut pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pipes.get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(device, variants, k.shader)?;
        let layout = bind_group_layout(device, writable);
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(k.entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.entry),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(k.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &k.constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(OpError::Device(format!(
                "building {} of {} ({}): {e}",
                k.entry,
                k.shader.name,
                variants.describe()
            )));
        }
        let p = Arc::new(Pipe {
            pipeline,
            layout,
            id: pipes.len() as u64,
        });
        pipes.insert(key, p.clone());
        Ok(p)
    }

    fn module(
        &self,
        device: &wgpu::Device,
        variants: Variants,
        shader: Shader,
    ) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(shader.name) {
            return Ok(m.clone());
        }
        let source = shader.module(variants.reduce, variants.dot);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(OpError::Device(format!(
                "compiling {} ({}): {e}",
                shader.name,
                variants.describe()
            )));
        }
        modules.insert(shader.name, m.clone());
        Ok(m)
    }
}

/// Binding 0: the parameters; 1: the step's data; 2..: the op's buffers.
fn bind_group_layout(device: &wgpu::Device, writable: &[bool]) -> wgpu::BindGroupLayout {
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![
        wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(PARAMS_BYTES),
            },
            count: None,
        },
        storage(1, true),
    ];
    for (i, &w) in writable.iter().enumerate() {
        entries.push(storage(2 + i as u32, !w));
    }
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &entries,
    })
}

/// Workgroup counts for `groups` workgroups: (x, y) with x under the 65,535 limit of a
/// dimension; shaders number them `x + y · nx` (common.wgsl) and skip those past the count.
pub(crate) fn grid(groups: usize) -> Result<(u32, u32)> {
    const MAX: usize = 65_535;
    let x = groups.clamp(1, MAX);
    let y = groups.div_ceil(MAX).max(1);
    if y > MAX {
        return Err(OpError::Unsupported {
            op: "dispatch",
            what: format!("{groups} workgroups"),
        });
    }
    Ok((x as u32, y as u32))
}

#[cfg(test)]
mod tests {
    use super::grid;

    #[test]
    fn grids_cover_every_workgroup_within_the_limit() {
        assert_eq!(grid(0).unwrap(), (1, 1));
        assert_eq!(grid(65_535).unwrap(), (65_535, 1));
        assert_eq!(grid(100_000).unwrap(), (65_535, 2));
        assert!(grid(65_535 * 65_535 + 1).is_err());
    }
}

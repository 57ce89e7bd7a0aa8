//! Work waiting to be submitted. Every launch is encoded as a dispatch into one command
//! encoder (in one compute pass, which wgpu orders with barriers); inside a step
//! (`begin_step` .. `end_step`) nothing is submitted until `end_step` or the first read, so a
//! decode step is one submission, and outside a step each op is submitted as it is launched.
//!
//! A launch's parameters go into the next 64-byte slot of one uniform buffer (bound at a
//! dynamic offset), its data (token ids, positions, slots, tables) into one storage buffer,
//! both written with the queue just before the submission that reads them. So the bind
//! group of a launch depends only on its buffers, and is made once per set of buffers and
//! kept (until one of them is dropped).

use std::collections::HashMap;
use std::sync::Arc;

use plumb_ops::{OpError, Result};

use crate::buffer::{Ids, Part, Tracked, WgpuBuf};
use crate::pipeline::{grid, Kernel, PARAMS_BYTES};

/// Parameter slots of one submission; more launches than this submit early.
const SLOTS: u64 = 2048;
/// Words of data of one submission at first (the buffer grows for a launch that needs more).
const DATA_WORDS: usize = 1 << 16;

/// A buffer an op binds, read-only or writable.
pub(crate) struct Bind<'a> {
    buf: &'a wgpu::Buffer,
    id: u64,
    writable: bool,
}

impl<'a> Bind<'a> {
    pub(crate) fn r(b: &'a WgpuBuf) -> Bind<'a> {
        Bind::tracked(&b.t, false)
    }

    /// A buffer the op writes: its host copy is stale from here on.
    pub(crate) fn w(b: &'a mut WgpuBuf) -> Bind<'a> {
        b.host = None;
        Bind::tracked(&b.t, true)
    }

    pub(crate) fn part(p: &'a Part) -> Bind<'a> {
        Bind::tracked(&p.t, false)
    }

    pub(crate) fn tracked(t: &'a Tracked, writable: bool) -> Bind<'a> {
        Bind {
            buf: &t.buf,
            id: t.id,
            writable,
        }
    }
}

/// The encoder being filled, the parameter and data arenas, and the kept bind groups.
pub(crate) struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    params: Vec<u8>,
    params_buf: Tracked,
    slot: u64,
    data: Vec<u32>,
    data_buf: Tracked,
    data_cap: usize,
    pub(crate) in_step: bool,
    bind_groups: HashMap<Vec<u64>, wgpu::BindGroup>,
    /// Submissions so far (tests count them).
    pub(crate) submissions: u64,
}

impl Pending {
    pub(crate) fn new(device: &wgpu::Device, limits: &wgpu::Limits, ids: &Arc<Ids>) -> Pending {
        let align = limits.min_uniform_buffer_offset_alignment as u64;
        let slot = PARAMS_BYTES.next_multiple_of(align.max(1));
        let params_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: slot * SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Pending {
            encoder: None,
            pass: None,
            params: Vec::new(),
            params_buf: Tracked::new(params_buf, ids),
            slot,
            data: Vec::new(),
            data_buf: Tracked::new(data_buffer(device, DATA_WORDS), ids),
            data_cap: DATA_WORDS,
            in_step: false,
            bind_groups: HashMap::new(),
            submissions: 0,
        }
    }

    /// Encodes one dispatch of `groups` workgroups of `k` with `params` (then the offset of
    /// `data` in the data buffer, as one more word) and `binds` from binding 2.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        &mut self,
        ctx: &Ctx<'_>,
        k: &Kernel,
        params: &[u32],
        data: &[u32],
        binds: &[Bind<'_>],
        groups: usize,
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        let (gx, gy) = grid(groups)?;
        let writable: Vec<bool> = binds.iter().map(|b| b.writable).collect();
        let pipe = ctx.pipes.get(ctx.device, ctx.variants, k, &writable)?;
        self.make_room(ctx, data.len())?;
        let at = self.data.len() as u32;
        self.data.extend_from_slice(data);
        let offset = self.params.len() as u64;
        let mut words = params.to_vec();
        words.push(at);
        if words.len() * 4 > PARAMS_BYTES as usize {
            return Err(OpError::Device(format!(
                "{}: {} parameter words, at most {}",
                k.entry,
                words.len(),
                PARAMS_BYTES / 4
            )));
        }
        for w in &words {
            self.params.extend_from_slice(&w.to_le_bytes());
        }
        self.params.resize((offset + self.slot) as usize, 0);
        let bg = self.bind_group(ctx, &pipe, binds);
        let pass = self.pass(ctx.device);
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bg, &[offset as u32]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }

    /// Submits what is pending first when one more launch with `words` of data does not fit,
    /// and grows the data buffer when `words` alone does not.
    fn make_room(&mut self, ctx: &Ctx<'_>, words: usize) -> Result<()> {
        let slots_full = self.params.len() as u64 >= self.slot * SLOTS;
        if slots_full || self.data.len() + words > self.data_cap {
            self.submit(ctx)?;
        }
        if words > self.data_cap {
            let cap = words.next_power_of_two();
            self.data_buf = Tracked::new(data_buffer(ctx.device, cap), ctx.ids);
            self.data_cap = cap;
        }
        Ok(())
    }

    fn bind_group(
        &mut self,
        ctx: &Ctx<'_>,
        pipe: &crate::pipeline::Pipe,
        binds: &[Bind<'_>],
    ) -> wgpu::BindGroup {
        let dropped = ctx.ids.take_dropped();
        if !dropped.is_empty() {
            self.bind_groups
                .retain(|key, _| !key[1..].iter().any(|id| dropped.contains(id)));
        }
        let mut key = vec![pipe.id, self.params_buf.id, self.data_buf.id];
        key.extend(binds.iter().map(|b| b.id));
        if let Some(bg) = self.bind_groups.get(&key) {
            return bg.clone();
        }
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.params_buf.buf,
                    offset: 0,
                    size: wgpu::BufferSize::new(PARAMS_BYTES),
                }),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: self.data_buf.buf.as_entire_binding(),
            },
        ];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: 2 + i as u32,
                resource: b.buf.as_entire_binding(),
            });
        }
        let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.layout,
            entries: &entries,
        });
        self.bind_groups.insert(key, bg.clone());
        bg
    }

    fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder
            .get_or_insert_with(|| device.create_command_encoder(&Default::default()))
    }

    fn pass(&mut self, device: &wgpu::Device) -> &mut wgpu::ComputePass<'static> {
        let encoder = &mut self.encoder;
        self.pass.get_or_insert_with(|| {
            encoder
                .get_or_insert_with(|| device.create_command_encoder(&Default::default()))
                .begin_compute_pass(&Default::default())
                .forget_lifetime()
        })
    }

    /// Encodes a buffer-to-buffer copy of `bytes` (outside the compute pass).
    pub(crate) fn copy(
        &mut self,
        device: &wgpu::Device,
        src: &wgpu::Buffer,
        src_off: u64,
        dst: &wgpu::Buffer,
        dst_off: u64,
        bytes: u64,
    ) {
        self.pass = None;
        self.encoder(device)
            .copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes);
    }

    /// Writes the arenas and submits the encoder, if anything is pending.
    pub(crate) fn submit(&mut self, ctx: &Ctx<'_>) -> Result<()> {
        self.pass = None;
        let Some(encoder) = self.encoder.take() else {
            return Ok(());
        };
        if !self.params.is_empty() {
            ctx.queue
                .write_buffer(&self.params_buf.buf, 0, &self.params);
        }
        if !self.data.is_empty() {
            let bytes: Vec<u8> = self.data.iter().flat_map(|w| w.to_le_bytes()).collect();
            ctx.queue.write_buffer(&self.data_buf.buf, 0, &bytes);
        }
        ctx.queue.submit([encoder.finish()]);
        self.params.clear();
        self.data.clear();
        self.submissions += 1;
        Ok(())
    }
}

/// What a launch needs of the backend besides the pending work.
pub(crate) struct Ctx<'a> {
    pub(crate) device: &'a wgpu::Device,
    pub(crate) queue: &'a wgpu::Queue,
    pub(crate) pipes: &'a crate::pipeline::Pipelines,
    pub(crate) variants: crate::variant::Variants,
    pub(crate) ids: &'a Arc<Ids>,
}

fn data_buffer(device: &wgpu::Device, words: usize) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("step data"),
        size: (words * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

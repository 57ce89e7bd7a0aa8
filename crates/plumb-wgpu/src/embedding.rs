//! Launcher of shaders/embedding.wgsl.

use plumb_ops::{shapes, Result};

use crate::buffer::{WgpuBuf, WgpuWeight};
use crate::device::WgpuBackend;
use crate::encoder::Bind;
use crate::pipeline::Kernel;
use crate::shaders;

impl WgpuBackend {
    pub(crate) fn embedding_impl(
        &self,
        table: &WgpuWeight,
        ids: &[u32],
        out: &mut WgpuBuf,
    ) -> Result<()> {
        shapes::embedding((table.rows, table.cols), ids, out.len)?;
        let k = Kernel::new(shaders::EMBEDDING, "embedding").with(&table.format.constants());
        // Counts fit u32: every buffer is bound whole, and an adapter binds at most 4 GiB.
        let groups = (ids.len() * table.cols.div_ceil(4)).div_ceil(256);
        self.op(|p, ctx| {
            // One launch per part of the table, each writing the ids in its rows.
            for part in &table.parts {
                let params = [
                    ids.len() as u32,
                    table.cols as u32,
                    table.row_words as u32,
                    part.row0 as u32,
                    part.rows as u32,
                ];
                let binds = [Bind::part(part), Bind::w(out)];
                p.launch(ctx, &k, &params, ids, &binds, groups)?;
            }
            Ok(())
        })
    }
}

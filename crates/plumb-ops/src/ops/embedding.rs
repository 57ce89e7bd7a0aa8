//! Embedding lookup: `out[t, :] = dequant(table[ids[t], :])`.
//! `table: [vocab, dim]` in any stored format; `out: [ids.len(), dim]`.

use plumb_core::HostWeight;

use crate::error::Result;
use crate::shapes;

pub fn reference(table: &HostWeight, ids: &[u32], out: &mut [f32]) -> Result<()> {
    shapes::embedding((table.rows, table.cols), ids, out.len())?;
    let dim = table.cols;
    for (t, &id) in ids.iter().enumerate() {
        table.dequantize_row(id as usize, &mut out[t * dim..(t + 1) * dim])?;
    }
    Ok(())
}

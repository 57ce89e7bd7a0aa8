//! Embedding lookup: `out[t, :] = dequant(table[ids[t], :])`.
//! `table: [vocab, dim]` in any stored format; `out: [ids.len(), dim]`.

use plumb_core::HostWeight;

use crate::error::{ensure, Result};

pub fn reference(table: &HostWeight, ids: &[u32], out: &mut [f32]) -> Result<()> {
    let dim = table.cols;
    ensure(out.len() >= ids.len() * dim, "embedding", || {
        format!(
            "output holds {} values, need {}",
            out.len(),
            ids.len() * dim
        )
    })?;
    for (t, &id) in ids.iter().enumerate() {
        ensure((id as usize) < table.rows, "embedding", || {
            format!(
                "token id {id} is outside the vocabulary of {} rows",
                table.rows
            )
        })?;
        table.dequantize_row(id as usize, &mut out[t * dim..(t + 1) * dim])?;
    }
    Ok(())
}

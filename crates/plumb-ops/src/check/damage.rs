//! How each [`Fault`] damages an output's values (the arithmetic behind `faults.rs`).

use super::faults::Fault;

/// The element a wrong-element fault hits in an output of `len`.
pub(super) fn wrong_index(len: usize) -> usize {
    len * 7 / 13
}

/// Applies `fault` to `v`, an output of `rows × cols` (`before`: what it held before the op;
/// `scale`: the scale of the element a wrong-element fault hits, else the output's RMS).
pub(super) fn damage_values(
    fault: Fault,
    v: &mut [f32],
    rows: usize,
    cols: usize,
    before: Option<&[f32]>,
    scale: Option<f64>,
) {
    let len = v.len();
    if len == 0 {
        return;
    }
    match fault {
        Fault::WrongElement => {
            let rms = (v.iter().map(|&x| (x * x) as f64).sum::<f64>() / len as f64).sqrt();
            let s = scale.unwrap_or(rms);
            v[wrong_index(len)] += if s > 0.0 { 0.5 * s as f32 } else { 1.0 };
        }
        Fault::WrongRow if rows >= 2 && rows * cols == len => {
            let (first, rest) = v.split_at_mut(cols);
            rest[(rows - 2) * cols..].copy_from_slice(first);
        }
        Fault::Transposed if rows >= 2 && cols >= 2 && rows * cols == len => {
            let src = v.to_vec();
            // Element (r, c) lands where a [cols, rows] layout keeps it: c * rows + r.
            for r in 0..rows {
                for c in 0..cols {
                    v[c * rows + r] = src[r * cols + c];
                }
            }
        }
        Fault::Stale => {
            if let Some(b) = before {
                let from = len - len.div_ceil(4);
                v[from..].copy_from_slice(&b[from..len]);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_damages_a_two_by_three_output() {
        let base = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let before = [9.0f32; 6];
        let run = |f: Fault| {
            let mut v = base;
            damage_values(f, &mut v, 2, 3, Some(&before), None);
            v
        };
        let mut one = base;
        one[3] += 0.5 * (91.0f64 / 6.0).sqrt() as f32;
        assert_eq!(run(Fault::WrongElement), one);
        assert_eq!(run(Fault::WrongRow), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        assert_eq!(run(Fault::Transposed), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(run(Fault::Stale), [1.0, 2.0, 3.0, 4.0, 9.0, 9.0]);
        // A single row has no other row to take, nor a transpose that moves anything.
        let mut row = [1.0f32, 2.0, 3.0];
        damage_values(Fault::WrongRow, &mut row, 1, 3, None, None);
        damage_values(Fault::Transposed, &mut row, 1, 3, None, None);
        assert_eq!(row, [1.0, 2.0, 3.0]);
    }
}

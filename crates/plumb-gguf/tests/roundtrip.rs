//! GGUF writer → reader round trips, accessors, and the writer's own checks.

use std::io::Write;

use plumb_core::{Bytes, GgmlType};
use plumb_gguf::{GgufError, GgufFile, GgufWriter, Value, ValueType};

fn pattern(n: usize, seed: u8) -> Bytes {
    Bytes::from_vec(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect(),
    )
}

fn write(w: GgufWriter) -> Bytes {
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    Bytes::from_vec(out)
}

fn all_values() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("v.u8", Value::U8(200)),
        ("v.i8", Value::I8(-100)),
        ("v.u16", Value::U16(60000)),
        ("v.i16", Value::I16(-30000)),
        ("v.u32", Value::U32(4_000_000_000)),
        ("v.i32", Value::I32(-2_000_000_000)),
        ("v.f32", Value::F32(1.5e-5)),
        ("v.bool.t", Value::Bool(true)),
        ("v.bool.f", Value::Bool(false)),
        ("v.str.empty", Value::String(String::new())),
        ("v.str.unicode", Value::String("héllo ▁世界 🦀".into())),
        ("v.u64", Value::U64(u64::MAX)),
        ("v.i64", Value::I64(i64::MIN)),
        ("v.f64", Value::F64(-1.234567890123)),
        ("v.arr.empty", Value::Array(ValueType::U32, vec![])),
        (
            "v.arr.i32",
            Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(-2)]),
        ),
        (
            "v.arr.str",
            Value::Array(
                ValueType::String,
                vec![Value::String("a".into()), Value::String(String::new())],
            ),
        ),
        (
            "v.arr.nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::Array(ValueType::F32, vec![Value::F32(0.5), Value::F32(-1.0)]),
                    Value::Array(ValueType::String, vec![]),
                    Value::Array(
                        ValueType::Array,
                        vec![Value::Array(ValueType::U8, vec![Value::U8(7)])],
                    ),
                ],
            ),
        ),
        (
            "v.arr.bool",
            Value::Array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
        ),
    ]
}

/// (name, type, dims) with byte sizes: F32 4x3 = 48, F16 8 = 16, Q4_0 64x2 = 72, Q8_0 32x3 = 102.
const TENSORS: [(&str, GgmlType, &[u64], usize); 4] = [
    ("a.f32", GgmlType::F32, &[4, 3], 48),
    ("b.f16", GgmlType::F16, &[8], 16),
    ("c.q4_0", GgmlType::Q4_0, &[64, 2], 72),
    ("d.q8_0", GgmlType::Q8_0, &[32, 3, 1], 102),
];

fn full_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w.add_metadata(k, v);
    }
    for (i, (name, ty, dims, n)) in TENSORS.iter().enumerate() {
        w.add_tensor(*name, *ty, dims, pattern(*n, i as u8))
            .unwrap();
    }
    w
}

#[test]
fn round_trip_every_value_type_and_tensor() {
    let bytes = write(full_writer());
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    let expected: Vec<(String, Value)> = all_values()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(f.metadata, expected);
    for (k, v) in &expected {
        assert_eq!(f.get(k), Some(v));
    }
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.file_size(), bytes.len());
    assert_eq!(f.tensors.len(), TENSORS.len());
    for (i, (name, ty, dims, n)) in TENSORS.iter().enumerate() {
        let t = f.tensor(name).unwrap();
        assert_eq!(&f.tensors[i], t);
        assert_eq!(t.ty, *ty);
        assert_eq!(t.dims, dims.to_vec());
        assert_eq!(t.n_bytes, *n);
        assert_eq!(t.n_elements, dims.iter().product::<u64>());
        assert_eq!(t.offset % 32, 0, "{name}");
        let data = f.tensor_bytes(t);
        assert_eq!(data.as_slice(), pattern(*n, i as u8).as_slice());
        // Zero-copy: the view points into the original buffer.
        let start = f.data_offset + t.offset as usize;
        assert_eq!(data.as_slice().as_ptr(), bytes.as_slice()[start..].as_ptr());
    }
    assert!(f.tensor("nope").is_none());
}

#[test]
fn custom_alignment_is_respected() {
    for align in [1u32, 8, 64, 4096] {
        let mut w = full_writer();
        w.add_metadata("general.alignment", Value::U32(align));
        let f = GgufFile::from_bytes(write(w)).unwrap();
        assert_eq!(f.alignment, align as usize);
        assert_eq!(f.data_offset % align as usize, 0);
        for (i, t) in f.tensors.iter().enumerate() {
            assert_eq!(t.offset % align as u64, 0);
            let want = pattern(TENSORS[i].3, i as u8);
            assert_eq!(f.tensor_bytes(t).as_slice(), want.as_slice());
        }
    }
}

#[test]
fn writer_rejects_bad_alignment() {
    for bad in [Value::U32(0), Value::U32(48), Value::String("32".into())] {
        let mut w = full_writer();
        w.add_metadata("general.alignment", bad);
        let err = w.write_to(Vec::new()).unwrap_err();
        assert!(matches!(err, GgufError::BadAlignment(_)), "{err}");
    }
}

#[test]
fn add_metadata_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::U8(1));
    w.add_metadata("b", Value::U8(2));
    w.add_metadata("a", Value::U8(3));
    let f = GgufFile::from_bytes(write(w)).unwrap();
    assert_eq!(
        f.metadata,
        vec![("a".into(), Value::U8(3)), ("b".into(), Value::U8(2))]
    );
    assert!(f.tensors.is_empty());
}

#[test]
fn reads_a_hand_written_v2_file() {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // kvs
    b.extend_from_slice(&20u64.to_le_bytes());
    b.extend_from_slice(b"general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&5u64.to_le_bytes());
    b.extend_from_slice(b"gpt-2");
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(b"w");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&3u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // F32
    b.extend_from_slice(&0u64.to_le_bytes());
    let data_offset = b.len().next_multiple_of(32);
    b.resize(data_offset, 0);
    for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let f = GgufFile::from_bytes(Bytes::from_vec(b)).unwrap();
    assert_eq!(f.version, 2);
    assert_eq!(f.data_offset, data_offset);
    assert_eq!(f.architecture().unwrap(), "gpt-2");
    let w = f.weight("w").unwrap();
    assert_eq!((w.rows, w.cols), (3, 2));
    assert_eq!(w.data.len(), 24);
    assert_eq!(&w.data.as_slice()[20..], &6.0f32.to_le_bytes());
}

#[test]
fn typed_accessors() {
    let f = GgufFile::from_bytes(write(full_writer())).unwrap();
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_str("v.str.unicode").unwrap(), "héllo ▁世界 🦀");
    assert_eq!(f.get_u64("v.u8").unwrap(), 200);
    assert_eq!(f.get_u64("v.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u64("v.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_f32("v.f32").unwrap(), 1.5e-5);
    assert_eq!(f.get_f32("v.i16").unwrap(), -30000.0);
    assert_eq!(f.get_f32("v.f64").unwrap(), -1.234567890123f64 as f32);
    assert!(f.get_bool("v.bool.t").unwrap());
    assert!(!f.get_bool("v.bool.f").unwrap());
    assert_eq!(f.get_array("v.arr.i32").unwrap().len(), 2);
    assert!(f.get_array("v.arr.empty").unwrap().is_empty());

    let e = f.get_u64("v.i8").unwrap_err();
    assert!(
        matches!(e, GgufError::WrongType { ref key, .. } if key == "v.i8"),
        "{e}"
    );
    assert!(e.to_string().contains("v.i8"), "{e}");
    let e = f.get_str("v.u8").unwrap_err();
    assert!(e.to_string().contains("\"v.u8\""), "{e}");
    assert!(matches!(
        f.get_bool("v.u8"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_array("v.str.empty"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_f32("v.bool.t"),
        Err(GgufError::WrongType { .. })
    ));
    let e = f.get_str("llama.context_length").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey(ref k) if k == "llama.context_length"));
    assert!(e.to_string().contains("llama.context_length"), "{e}");
}

#[test]
fn weights_have_rows_and_cols() {
    let f = GgufFile::from_bytes(write(full_writer())).unwrap();
    let w = f.weight("a.f32").unwrap();
    assert_eq!((w.ty, w.rows, w.cols), (GgmlType::F32, 3, 4));
    let w = f.weight("b.f16").unwrap();
    assert_eq!((w.rows, w.cols), (1, 8));
    let w = f.weight("c.q4_0").unwrap();
    assert_eq!(
        (w.ty, w.rows, w.cols, w.data.len()),
        (GgmlType::Q4_0, 2, 64, 72)
    );
    let w = f.weight("d.q8_0").unwrap();
    assert_eq!((w.rows, w.cols, w.row_bytes()), (3, 32, 34));
    let e = f.weight("output.weight").unwrap_err();
    assert!(matches!(e, GgufError::MissingTensor(ref n) if n == "output.weight"));
    assert!(e.to_string().contains("output.weight"));
}

#[test]
fn writer_checks_tensors() {
    let mut w = GgufWriter::new();
    let e = w
        .add_tensor("x", GgmlType::Q8_0, &[32, 2], pattern(67, 0))
        .unwrap_err();
    assert!(
        matches!(
            e,
            GgufError::DataLength {
                expected: 68,
                got: 67,
                ..
            }
        ),
        "{e}"
    );
    let e = w
        .add_tensor("x", GgmlType::Q4_0, &[33], pattern(18, 0))
        .unwrap_err();
    assert!(matches!(e, GgufError::NotBlockAligned { .. }), "{e}");
    let e = w
        .add_tensor("x", GgmlType::F32, &[1, 1, 1, 1, 1], pattern(4, 0))
        .unwrap_err();
    assert!(matches!(e, GgufError::BadDimCount { n_dims: 5, .. }), "{e}");
    let e = w
        .add_tensor("x", GgmlType::F32, &[], pattern(4, 0))
        .unwrap_err();
    assert!(matches!(e, GgufError::BadDimCount { n_dims: 0, .. }), "{e}");
    let e = w
        .add_tensor("x", GgmlType::F32, &[u64::MAX, 2], pattern(4, 0))
        .unwrap_err();
    assert!(matches!(e, GgufError::DimOverflow { .. }), "{e}");
    w.add_tensor("x", GgmlType::F32, &[2], pattern(8, 0))
        .unwrap();
    let e = w
        .add_tensor("x", GgmlType::F32, &[2], pattern(8, 0))
        .unwrap_err();
    assert!(
        matches!(e, GgufError::DuplicateTensor(ref n) if n == "x"),
        "{e}"
    );
    let e = w
        .add_tensor_fn("x", GgmlType::F32, &[2], Box::new(|_| Ok(())))
        .unwrap_err();
    assert!(matches!(e, GgufError::DuplicateTensor(_)), "{e}");
}

#[test]
fn writer_rejects_mixed_arrays() {
    let mut w = GgufWriter::new();
    w.add_metadata(
        "bad",
        Value::Array(ValueType::U32, vec![Value::U32(1), Value::I32(2)]),
    );
    let e = w.write_to(Vec::new()).unwrap_err();
    assert!(
        matches!(e, GgufError::InvalidValue { ref key, .. } if key == "bad"),
        "{e}"
    );
}

fn fill_writer(n: usize, fill: plumb_gguf::FillFn) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_tensor("first", GgmlType::F16, &[3], pattern(6, 9))
        .unwrap();
    w.add_tensor_fn("streamed", GgmlType::Q8_0, &[32, n as u64 / 34], fill)
        .unwrap();
    w
}

#[test]
fn streamed_tensors() {
    let n = 34 * 100;
    let w = fill_writer(
        n,
        Box::new(move |out: &mut dyn Write| {
            // In uneven chunks.
            let data = pattern(n, 3);
            for chunk in data.as_slice().chunks(333) {
                out.write_all(chunk)?;
            }
            Ok(())
        }),
    );
    let f = GgufFile::from_bytes(write(w)).unwrap();
    let t = f.tensor("streamed").unwrap();
    assert_eq!(t.offset % 32, 0);
    assert_eq!(f.tensor_bytes(t).as_slice(), pattern(n, 3).as_slice());
    assert_eq!(
        f.tensor_bytes(f.tensor("first").unwrap()).as_slice(),
        pattern(6, 9).as_slice()
    );
}

#[test]
fn streamed_tensor_of_the_wrong_length_fails() {
    let n = 34 * 4;
    for got in [0usize, n - 1, n + 1, 2 * n] {
        let w = fill_writer(
            n,
            Box::new(move |out: &mut dyn Write| out.write_all(&vec![7u8; got])),
        );
        let e = w.write_to(Vec::new()).unwrap_err();
        assert!(
            matches!(e, GgufError::DataLength { ref name, expected, .. } if name == "streamed" && expected == n),
            "{got}: {e}"
        );
    }
    let w = fill_writer(
        n,
        Box::new(|out: &mut dyn Write| {
            out.write_all(&[1, 2, 3])?;
            Err(std::io::Error::other("generator failed"))
        }),
    );
    let e = w.write_to(Vec::new()).unwrap_err();
    assert!(matches!(e, GgufError::Fill { .. }), "{e}");
    assert!(e.to_string().contains("generator failed"), "{e}");
}

#[test]
fn write_file_then_open() {
    let dir = std::env::temp_dir().join(format!("plumb-gguf-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    full_writer().write_file(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.gguf")]);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(
        f.file_size() as u64,
        std::fs::metadata(&path).unwrap().len()
    );
    assert_eq!(f.architecture().unwrap(), "llama");
    let w = f.weight("c.q4_0").unwrap();
    assert_eq!(w.data.as_slice(), pattern(72, 2).as_slice());

    // A failed write leaves neither the target nor a temporary file behind.
    let bad = dir.join("bad.gguf");
    let w = fill_writer(34, Box::new(|_: &mut dyn Write| Ok(())));
    assert!(w.write_file(&bad).is_err());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

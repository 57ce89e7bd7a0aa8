//! Malformed GGUF files: every one must give a clear error, never a panic, hang or huge
//! allocation.

use plumb_core::{Bytes, GgmlType};
use plumb_gguf::{GgufError, GgufFile, GgufWriter, Value, ValueType, MAX_ARRAY_DEPTH};

/// A hand-built GGUF file.
#[derive(Clone, Default)]
struct B(Vec<u8>);

impl B {
    /// Magic, version, tensor count, kv count.
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> B {
        B::default()
            .raw(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }
    fn raw(mut self, b: &[u8]) -> B {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> B {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> B {
        self.raw(&v.to_le_bytes())
    }
    fn str(self, s: &[u8]) -> B {
        self.u64(s.len() as u64).raw(s)
    }
    /// A tensor info.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> B {
        let mut b = self.str(name.as_bytes()).u32(dims.len() as u32);
        for d in dims {
            b = b.u64(*d);
        }
        b.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(mut self, n: usize) -> B {
        let at = self.0.len().next_multiple_of(32);
        self.0.resize(at + n, 0xab);
        self
    }
    fn parse(self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(Bytes::from_vec(self.0))
    }
    fn err(self) -> GgufError {
        match self.parse() {
            Ok(_) => panic!("parsed a malformed file"),
            Err(e) => e,
        }
    }
}

fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("general.alignment", Value::U32(64));
    w.add_metadata(
        "tokens",
        Value::Array(
            ValueType::String,
            vec![Value::String("<s>".into()), Value::String("▁a".into())],
        ),
    );
    w.add_metadata(
        "nested",
        Value::Array(
            ValueType::Array,
            vec![Value::Array(ValueType::I16, vec![Value::I16(-1)])],
        ),
    );
    w.add_metadata("f", Value::F64(0.25));
    let data = |n: usize| Bytes::from_vec((0..n).map(|i| i as u8 | 1).collect());
    w.add_tensor("w1", GgmlType::Q4_0, &[32, 2], data(36))
        .unwrap();
    w.add_tensor("w2", GgmlType::F32, &[3], data(12)).unwrap();
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

#[test]
fn valid_file_parses() {
    let f = GgufFile::from_bytes(Bytes::from_vec(valid_file())).unwrap();
    assert_eq!(f.tensors.len(), 2);
    assert_eq!(f.alignment, 64);
}

#[test]
fn every_truncation_is_an_error() {
    let full = valid_file();
    for len in 0..full.len() {
        let r = GgufFile::from_bytes(Bytes::from_vec(full[..len].to_vec()));
        let e = r
            .err()
            .unwrap_or_else(|| panic!("truncation at {len} parsed"));
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::CountTooLarge { .. }
                    | GgufError::TensorOutOfBounds { .. }
            ),
            "truncation at {len}: {e}"
        );
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let full = valid_file();
    for pos in 0..full.len() {
        for v in [0x00u8, 0x01, 0x07, 0x0d, 0x7f, 0x80, 0xff] {
            let mut b = full.clone();
            b[pos] = v;
            let _ = GgufFile::from_bytes(Bytes::from_vec(b));
        }
    }
}

#[test]
fn bad_magic_names_what_was_found() {
    let e = B::default().raw(b"GGML").u32(3).u64(0).u64(0).err();
    assert!(
        matches!(e, GgufError::BadMagic { found } if &found == b"GGML"),
        "{e}"
    );
    assert!(e.to_string().contains("GGML"), "{e}");
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 1, 4, 99] {
        let e = B::header(v, 0, 0).err();
        assert!(
            matches!(e, GgufError::UnsupportedVersion(x) if x == v),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("unsupported GGUF version {v}")),
            "{e}"
        );
    }
    let e = B::header(3u32.swap_bytes(), 0, 0).err();
    assert!(matches!(e, GgufError::BigEndian(3)), "{e}");
}

#[test]
fn truncated_header() {
    let e = B::default().raw(b"GGUF").u32(3).u32(0).err();
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                offset: 8,
                needed: 8,
                available: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("byte 8"), "{e}");
    assert!(matches!(
        B::default().raw(b"GG").err(),
        GgufError::Truncated { .. }
    ));
}

#[test]
fn header_only_file_is_valid() {
    let f = B::header(3, 0, 0).parse().unwrap();
    assert!(f.tensors.is_empty() && f.metadata.is_empty());
}

#[test]
fn unknown_metadata_value_type() {
    let e = B::header(3, 0, 1).str(b"k").u32(13).u32(0).err();
    assert!(
        matches!(e, GgufError::UnknownValueType { id: 13, offset: 33 }),
        "{e}"
    );
    // ... also as an array's element type.
    let e = B::header(3, 0, 1).str(b"k").u32(9).u32(77).u64(0).err();
    assert!(
        matches!(e, GgufError::UnknownValueType { id: 77, .. }),
        "{e}"
    );
}

#[test]
fn nesting_is_bounded() {
    let nest = |depth: usize| {
        // `depth` arrays of one array each, around an empty array of u32.
        let mut b = B::header(3, 0, 1).str(b"deep").u32(9);
        for _ in 0..depth {
            b = b.u32(9).u64(1);
        }
        b.u32(4).u64(0)
    };
    let f = nest(MAX_ARRAY_DEPTH - 1).parse().unwrap();
    let mut v = f.get("deep").unwrap();
    for _ in 0..MAX_ARRAY_DEPTH - 1 {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &Value::Array(ValueType::U32, vec![]));
    let e = nest(MAX_ARRAY_DEPTH).err();
    assert!(matches!(e, GgufError::NestingTooDeep { .. }), "{e}");
    // A file full of array headers must fail fast, not recurse without bound.
    let e = nest(100_000).err();
    assert!(matches!(e, GgufError::NestingTooDeep { .. }), "{e}");
}

#[test]
fn absurd_counts_fail_fast() {
    let huge = 1u64 << 60;
    let e = B::header(3, huge, 0).err();
    assert!(
        matches!(e, GgufError::CountTooLarge { count, offset: 8, .. } if count == huge),
        "{e}"
    );
    let e = B::header(3, 0, huge).err();
    assert!(
        matches!(e, GgufError::CountTooLarge { offset: 16, .. }),
        "{e}"
    );
    let e = B::header(3, 0, u64::MAX).err();
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
    // Array lengths: 2^60 u32s, and a length whose byte size overflows.
    for n in [huge, u64::MAX, 1000] {
        let e = B::header(3, 0, 1)
            .str(b"k")
            .u32(9)
            .u32(4)
            .u64(n)
            .raw(&[0; 64])
            .err();
        assert!(
            matches!(e, GgufError::CountTooLarge { count, .. } if count == n),
            "{e}"
        );
    }
    // String lengths: of a key, a value, an array element, a tensor name.
    let e = B::header(3, 0, 1).u64(huge).err();
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
    let e = B::header(3, 0, 1).str(b"k").u32(8).u64(huge).err();
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
    let e = B::header(3, 0, 1)
        .str(b"k")
        .u32(9)
        .u32(8)
        .u64(1)
        .u64(huge)
        .err();
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
    let e = B::header(3, 1, 0).u64(u64::MAX).raw(&[0; 64]).err();
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
}

#[test]
fn invalid_utf8() {
    let e = B::header(3, 0, 1).str(b"k\xff").u32(0).raw(&[1]).err();
    assert!(
        matches!(e, GgufError::InvalidUtf8 { offset: 24, .. }),
        "{e}"
    );
    let e = B::header(3, 1, 0)
        .str(b"\xc3")
        .u32(1)
        .u64(1)
        .u32(0)
        .u64(0)
        .data(4)
        .err();
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
    // Metadata string values are decoded lossily.
    let f = B::header(3, 0, 1)
        .str(b"k")
        .u32(8)
        .str(b"a\xffb")
        .parse()
        .unwrap();
    assert_eq!(f.get_str("k").unwrap(), "a\u{fffd}b");
}

#[test]
fn duplicate_keys_and_tensors() {
    let e = B::header(3, 0, 2)
        .str(b"k")
        .u32(0)
        .raw(&[1])
        .str(b"k")
        .u32(0)
        .raw(&[2])
        .err();
    assert!(
        matches!(e, GgufError::DuplicateKey { ref key, offset: 38 } if key == "k"),
        "{e}"
    );
    let e = B::header(3, 2, 0)
        .tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .data(64)
        .err();
    assert!(
        matches!(e, GgufError::DuplicateTensor(ref n) if n == "t"),
        "{e}"
    );
}

#[test]
fn unknown_tensor_type() {
    let e = B::header(3, 1, 0).tensor("t", &[4], 4, 0).data(64).err();
    assert!(
        matches!(e, GgufError::UnknownTensorType { ref name, id: 4, .. } if name == "t"),
        "{e}"
    );
}

#[test]
fn tensor_dimension_counts() {
    for dims in [&[][..], &[1, 1, 1, 1, 1][..]] {
        let e = B::header(3, 1, 0).tensor("t", dims, 0, 0).data(64).err();
        assert!(
            matches!(e, GgufError::BadDimCount { n_dims, offset: Some(24), .. } if n_dims as usize == dims.len()),
            "{e}"
        );
    }
    let f = B::header(3, 1, 0)
        .tensor("t", &[2, 1, 1, 1], 0, 0)
        .data(8)
        .parse();
    assert_eq!(f.unwrap().weight("t").unwrap().cols, 2);
}

#[test]
fn dimension_overflow() {
    for dims in [
        &[u64::MAX, 2][..],
        &[1 << 32, 1 << 32, 1 << 32][..],
        &[u64::MAX][..],
    ] {
        let e = B::header(3, 1, 0).tensor("t", dims, 0, 0).data(64).err();
        assert!(matches!(e, GgufError::DimOverflow { .. }), "{dims:?}: {e}");
    }
}

#[test]
fn row_not_a_whole_number_of_blocks() {
    let e = B::header(3, 1, 0)
        .tensor("t", &[33, 2], 8, 0)
        .data(136)
        .err();
    assert!(
        matches!(e, GgufError::NotBlockAligned { ref name, cols: 33, block: 32, .. } if name == "t"),
        "{e}"
    );
}

#[test]
fn misaligned_tensor_offset() {
    let e = B::header(3, 1, 0).tensor("t", &[4], 0, 16).data(64).err();
    assert!(
        matches!(
            e,
            GgufError::MisalignedTensor {
                offset: 16,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
    // With general.alignment = 16 the same offset is fine.
    let f = B::header(3, 1, 1)
        .str(b"general.alignment")
        .u32(4)
        .u32(16)
        .tensor("t", &[4], 0, 16)
        .data(64)
        .parse()
        .unwrap();
    assert_eq!(f.alignment, 16);
}

#[test]
fn tensor_data_past_the_end() {
    // 16 bytes needed, 15 present.
    let e = B::header(3, 1, 0).tensor("t", &[4], 0, 0).data(15).err();
    assert!(
        matches!(e, GgufError::TensorOutOfBounds { ref name, n_bytes: 16, .. } if name == "t"),
        "{e}"
    );
    assert!(e.to_string().contains("past the end"), "{e}");
    // Offsets so large that offset + data_offset overflows.
    for off in [1u64 << 40, u64::MAX - 31] {
        let e = B::header(3, 1, 0).tensor("t", &[4], 0, off).data(64).err();
        assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    }
}

#[test]
fn bad_alignment_values() {
    for (ty, v) in [(4u32, 0u64), (4, 3), (4, 48), (10, 1 << 40)] {
        let b = B::header(3, 0, 1).str(b"general.alignment").u32(ty);
        let b = if ty == 4 { b.u32(v as u32) } else { b.u64(v) };
        let e = b.err();
        assert!(matches!(e, GgufError::BadAlignment(_)), "{v}: {e}");
    }
    let e = B::header(3, 0, 1)
        .str(b"general.alignment")
        .u32(8)
        .str(b"32")
        .err();
    assert!(matches!(e, GgufError::BadAlignment(_)), "{e}");
}

#[test]
fn open_names_the_path() {
    let missing = std::path::Path::new("/nonexistent/plumb/model.gguf");
    let e = GgufFile::open(missing).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
    assert!(
        e.to_string().contains("/nonexistent/plumb/model.gguf"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("plumb-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [("empty.gguf", vec![]), ("v1.gguf", B::header(1, 0, 0).0)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = GgufFile::open(&path).unwrap_err();
        assert!(matches!(e, GgufError::InFile { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
        assert!(
            matches!(
                e.inner(),
                GgufError::Truncated { .. } | GgufError::UnsupportedVersion(1)
            ),
            "{e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

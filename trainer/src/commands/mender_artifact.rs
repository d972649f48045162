//! `linesight-train mender-artifact`: wrap a signed bundle into a Mender artifact for the
//! `linesight-model` Update Module (`packaging/mender/linesight-model`), so a fleet's
//! existing Mender server (or hosted Mender) rolls models out like any other update.
//!
//! The bundle is verified first (checksum, model hash, and its signature: against
//! `--trusted-key` files when given, else against the key it carries, so a bundle changed
//! after signing is refused here and not only on the box). Exactly the verified bytes go
//! into the artifact as `model.lsb`. The artifact is written by Mender's own
//! `mender-artifact write module-image`, with:
//! - payload type `linesight-model`, the given device types;
//! - provides `linesight.model.id` and `linesight.model.version` (and it clears the
//!   previous model's `linesight.model.*`), so the server's inventory shows which model each
//!   box runs;
//! - depends `linesight.runtime.version` (unless `--no-runtime-depends`): Mender compares
//!   depends by exact value with what the box's installed artifacts provide, so this names
//!   the runtime version the fleet runs (default: the bundle's `min_runtime_version`), and
//!   the box must have got its runtime through an artifact that provides that key. Whatever
//!   the depends say, `linesight-edge install` still checks `min_runtime_version` itself.
//!
//! The artifact is written under a temporary name and renamed when complete.

use anyhow::{bail, Context, Result};
use linesight_edge::commands::install::parse_version;
use linesight_shared::bundle::{sha256, Bundle};
use linesight_shared::signature::{verify_bundle, PublicKey};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The payload type, and the Update Module's file name under
/// `/usr/share/mender/modules/v3/`.
pub const PAYLOAD_TYPE: &str = "linesight-model";
/// The bundle's file name inside the artifact (the module installs the one file it finds).
pub const PAYLOAD_FILE: &str = "model.lsb";
/// Provides key of the model id.
pub const PROVIDES_MODEL_ID: &str = "linesight.model.id";
/// Provides key of the model version (Mender's software-version key
/// `<filesystem>.<name>.version`, cleared by the next model's artifact).
pub const PROVIDES_MODEL_VERSION: &str = "linesight.model.version";
/// Depends key: the runtime version a box must provide.
pub const DEPENDS_RUNTIME: &str = "linesight.runtime.version";

pub struct MenderArtifactSettings {
    pub bundle: PathBuf,
    pub device_types: Vec<String>,
    pub out: PathBuf,
    /// Default: `<model id>-<model version>`.
    pub artifact_name: Option<String>,
    /// The `linesight.runtime.version` the artifact depends on; default: the bundle's
    /// `min_runtime_version`.
    pub runtime_version: Option<String>,
    /// false: no runtime depends (boxes whose runtime did not come through Mender).
    pub runtime_depends: bool,
    /// Public keys the bundle must be signed with; empty: the key it carries.
    pub trusted_keys: Vec<PathBuf>,
    pub allow_unsigned: bool,
    /// The `mender-artifact` program.
    pub tool: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct MenderArtifactReport {
    pub artifact: String,
    pub artifact_bytes: u64,
    pub artifact_name: String,
    pub payload_type: &'static str,
    pub device_types: Vec<String>,
    pub provides: BTreeMap<String, String>,
    pub depends: BTreeMap<String, String>,
    pub model_id: String,
    pub model_version: String,
    /// Signer's fingerprint, or `unsigned`.
    pub signature: String,
    pub bundle_sha256: String,
}

/// Fails on a bundle that does not verify, a bad setting (device type, runtime version
/// older than the bundle needs), a missing `mender-artifact`, or its failure (with its
/// output).
pub fn run(s: &MenderArtifactSettings) -> Result<MenderArtifactReport> {
    if s.device_types.is_empty() {
        bail!("give at least one --device-type (the `device_type` of the boxes, from their /var/lib/mender/device_type)");
    }
    for t in &s.device_types {
        if t.is_empty() || t.chars().any(char::is_whitespace) {
            bail!("device type `{t}` is empty or contains whitespace");
        }
    }
    linesight_shared::output::refuse_each(&[&s.out], &[("the bundle", s.bundle.as_path())])?;
    let bytes = fs_err::read(&s.bundle)?;
    let bundle =
        Bundle::from_bytes(&bytes).with_context(|| format!("refusing `{}`", s.bundle.display()))?;
    let trusted = trusted_keys(s, &bundle)?;
    let verified = verify_bundle(&bundle, &trusted, s.allow_unsigned)
        .with_context(|| format!("refusing `{}`", s.bundle.display()))?;
    let m = &bundle.manifest;
    let need = parse_version(&m.min_runtime_version).with_context(|| {
        format!(
            "`{}`: its min_runtime_version `{}` is not major.minor.patch",
            s.bundle.display(),
            m.min_runtime_version
        )
    })?;
    let runtime = s
        .runtime_version
        .clone()
        .unwrap_or_else(|| m.min_runtime_version.clone());
    let have = parse_version(&runtime).with_context(|| {
        format!("--runtime-version `{runtime}` is not a major.minor.patch version")
    })?;
    if s.runtime_depends && have < need {
        bail!(
            "--runtime-version {runtime} is older than the {} the bundle needs: boxes with that runtime would refuse it at install",
            m.min_runtime_version
        );
    }
    let name = s
        .artifact_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", m.model_id, m.model_version));

    let provides = BTreeMap::from([
        (PROVIDES_MODEL_ID.to_string(), m.model_id.clone()),
        (PROVIDES_MODEL_VERSION.to_string(), m.model_version.clone()),
    ]);
    let mut depends = BTreeMap::new();
    if s.runtime_depends {
        depends.insert(DEPENDS_RUNTIME.to_string(), runtime);
    }

    // The payload folder and the artifact are written beside `out` under temporary
    // names, so a failed run leaves neither a half artifact nor a stray copy behind.
    let stage = partial_path(&s.out, ".payload");
    let partial = partial_path(&s.out, ".partial");
    let _ = std::fs::remove_dir_all(&stage);
    fs_err::create_dir_all(&stage)?;
    let result = (|| -> Result<()> {
        let payload = stage.join(PAYLOAD_FILE);
        fs_err::write(&payload, &bytes)?;
        let mut cmd = Command::new(&s.tool);
        cmd.args(["write", "module-image", "--type", PAYLOAD_TYPE])
            .arg("--artifact-name")
            .arg(&name);
        for t in &s.device_types {
            cmd.arg("--device-type").arg(t);
        }
        // `linesight.model.version` via Mender's software-version fields, which also make
        // the artifact clear the previous model's `linesight.model.*` provides.
        cmd.args([
            "--software-filesystem",
            "linesight",
            "--software-name",
            "model",
        ])
        .arg("--software-version")
        .arg(&m.model_version)
        .arg("--provides")
        .arg(format!("{PROVIDES_MODEL_ID}:{}", m.model_id));
        for (k, v) in &depends {
            cmd.arg("--depends").arg(format!("{k}:{v}"));
        }
        cmd.arg("--file")
            .arg(&payload)
            .arg("--output-path")
            .arg(&partial);
        tracing::info!(command = ?cmd, "writing the Mender artifact");
        let out = cmd.output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "`{}` not found: install Mender's artifact tool (Debian: apt-get install mender-artifact) or pass --mender-artifact PATH",
                    s.tool.display()
                )
            } else {
                anyhow::anyhow!("cannot run `{}`: {e}", s.tool.display())
            }
        })?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}{}",
                s.tool.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        fs_err::rename(&partial, &s.out)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&stage);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;
    Ok(MenderArtifactReport {
        artifact: s.out.display().to_string(),
        artifact_bytes: fs_err::metadata(&s.out)?.len(),
        artifact_name: name,
        payload_type: PAYLOAD_TYPE,
        device_types: s.device_types.clone(),
        provides,
        depends,
        model_id: m.model_id.clone(),
        model_version: m.model_version.clone(),
        signature: verified.describe().to_string(),
        bundle_sha256: hex::encode(sha256(&bytes)),
    })
}

/// `--trusted-key` files, else the key the bundle carries (which still catches a bundle
/// changed after signing).
fn trusted_keys(s: &MenderArtifactSettings, bundle: &Bundle) -> Result<Vec<PublicKey>> {
    if s.trusted_keys.is_empty() {
        return Ok(bundle
            .signature
            .as_ref()
            .map(|sig| PublicKey(sig.public_key))
            .into_iter()
            .collect());
    }
    s.trusted_keys
        .iter()
        .map(|p| PublicKey::read(p).map_err(anyhow::Error::from))
        .collect()
}

/// `OUT` + suffix (e.g. `model.mender.partial`).
fn partial_path(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    out.with_file_name(name)
}

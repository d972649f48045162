//! Where the trainer computes: the CPU, or an NVIDIA GPU through candle's CUDA backend
//! (`--device cuda[:N]`, only in a build with the trainer's `cuda` feature, which needs the
//! CUDA toolkit's `nvcc`; CI builds and tests without it).

use std::fmt;
use std::str::FromStr;

/// A device named on the command line or in a pipeline config: `cpu`, `cuda` (GPU 0) or
/// `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("`{0}` is not a device; expected `cpu`, `cuda` or `cuda:N` (N = the GPU's ordinal)")]
    Parse(String),
    #[error("device `cuda:{0}` needs a trainer built with the `cuda` feature (`scripts/cuda.sh build`, or `cargo build --release --features linesight-trainer/cuda` on a host with the CUDA toolkit); this build computes on the CPU only (`--device cpu`, or `device = \"cpu\"` in a pipeline config)")]
    NotBuilt(usize),
    #[error("cannot open CUDA device {ordinal}: {source} (`nvidia-smi` lists the GPUs this host's driver sees; `--device cpu`, or `device = \"cpu\"` in a pipeline config, computes on the CPU)")]
    Open {
        ordinal: usize,
        source: candle_core::Error,
    },
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s.trim() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| DeviceError::Parse(s.to_string())),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = DeviceError;
    fn try_from(s: String) -> Result<Self, DeviceError> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device; a CUDA device in a build without the `cuda` feature is a clear
    /// error, never a silent fall-back to the CPU.
    pub fn open(self) -> Result<candle_core::Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(candle_core::Device::Cpu),
            DeviceChoice::Cuda(ordinal) => open_cuda(ordinal),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<candle_core::Device, DeviceError> {
    candle_core::Device::new_cuda(ordinal).map_err(|e| DeviceError::Open {
        ordinal,
        source: without_backtrace(e),
    })
}

/// The cause without the stack trace candle attaches under `RUST_BACKTRACE` (a screenful of
/// cudarc frames): a missing GPU is the user's to fix, not a bug to debug.
#[cfg(feature = "cuda")]
fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        e => e,
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<candle_core::Device, DeviceError> {
    Err(DeviceError::NotBuilt(ordinal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:2".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(2)
        );
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.to_string().contains("is not a device"), "{bad}: {e}");
        }
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let e = DeviceChoice::Cuda(0).open().unwrap_err();
        assert!(e.to_string().contains("`cuda` feature"), "{e}");
    }
}

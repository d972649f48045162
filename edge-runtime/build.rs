//! Records the build profile and opt-level for `build_info` (what `bench` prints).
fn main() {
    for (var, name) in [
        ("PROFILE", "LINESIGHT_PROFILE"),
        ("OPT_LEVEL", "LINESIGHT_OPT_LEVEL"),
    ] {
        let value = std::env::var(var).unwrap_or_else(|_| "unknown".into());
        println!("cargo:rustc-env={name}={value}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

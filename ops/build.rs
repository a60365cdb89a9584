//! Compiles the CUDA kernels of `kernels/*.cu` to PTX when the `cuda` feature is on (with
//! `cudaforge`, as candle-kernels does): nvcc from `NVCC`, `CUDA_HOME` or `PATH`, the target
//! generation from `CUDA_COMPUTE_CAP` (or `nvidia-smi`). The PTX is embedded by
//! `src/cuda/mod.rs` and loaded onto the GPU on first use. Without the feature nothing runs.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    {
        println!("cargo:rerun-if-changed=kernels");
        let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let ptx = cudaforge::KernelBuilder::new()
            .source_dir("kernels")
            .arg("-O3")
            .arg("-std=c++17")
            .build_ptx()
            .unwrap_or_else(|e| panic!("compiling ops/kernels/*.cu to PTX: {e}"));
        ptx.write(out_dir.join("ptx.rs")).unwrap_or_else(|e| panic!("writing ptx.rs: {e}"));
    }
}

//! An NCCL implementation of [`Collective`]: one process per GPU, the gradient reductions on the
//! GPUs over NVLink / InfiniBand (PyTorch DDP's `nccl` backend), bootstrapped over another
//! collective (the MPI world): rank 0 creates the NCCL unique id and broadcasts its 128 bytes, and
//! every rank joins the communicator with its rank (NCCL's `ncclCommInitRank` pattern, through
//! cudarc's `nccl::Comm`).
//!
//! The NCCL calls run on the stream of the process's candle CUDA device, so they are ordered with
//! the candle kernels that produce and consume the buffers. The host-slice operations of the
//! trait copy to the GPU and back; [`Nccl::all_reduce_tensor`] reduces a device tensor in place on
//! the GPU (the gradient path). Byte broadcasts and gathers, barriers and aborts go through the
//! bootstrap collective (they carry variable-length host data, which NCCL is not for).
//!
//! Built with the `nccl` feature (candle's `nccl`, which needs `cuda`); linking needs `libnccl`
//! (`tools/cuda-toolchain.sh --link-stubs --nccl` for a build machine without one).

use crate::{Collective, DistError, ReduceOp};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use candle_core::cuda_backend::cudarc::nccl::{self, Comm, Id, NcclType};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// An NCCL communicator over one GPU per rank.
pub struct Nccl {
    comm: Mutex<SendComm>,
    stream: Arc<CudaStream>,
    device: Device,
    bootstrap: Arc<dyn Collective>,
}

/// cudarc's communicator holds a raw NCCL handle; NCCL allows using it from any thread as long
/// as calls are not concurrent, which the mutex around it guarantees.
struct SendComm(Comm);
// SAFETY: see above; the handle is only used under `Nccl::comm`'s mutex.
unsafe impl Send for SendComm {}

impl Nccl {
    /// Joins the NCCL communicator of every rank of `bootstrap`, on `device`: this process's
    /// GPU, normally `cuda:<local rank>` (one GPU per rank; NCCL refuses two ranks on one GPU).
    /// Every rank must call this together.
    pub fn new(bootstrap: Arc<dyn Collective>, device: &Device) -> Result<Self, DistError> {
        let Device::Cuda(cuda) = device else {
            return Err(DistError::Launch(format!("nccl: {device:?} is not a CUDA device")));
        };
        let stream = cuda.cuda_stream();
        let mut id_bytes = if bootstrap.rank() == 0 {
            let id = Id::new().map_err(|e| DistError::Launch(format!("nccl: cannot create the unique id: {e:?}")))?;
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        bootstrap.broadcast_bytes(&mut id_bytes, 0)?;
        let internal: [std::ffi::c_char; 128] = id_bytes
            .iter()
            .map(|&b| b as std::ffi::c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|v: Vec<_>| DistError::Launch(format!("nccl: the unique id has {} bytes, not 128", v.len())))?;
        let comm = Comm::from_rank(stream.clone(), bootstrap.rank(), bootstrap.world_size(), Id::uninit(internal))
            .map_err(|e| DistError::Launch(format!("nccl: rank {} cannot join: {e:?}", bootstrap.rank())))?;
        Ok(Self { comm: Mutex::new(SendComm(comm)), stream, device: device.clone(), bootstrap })
    }

    /// The GPU this rank reduces on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `t` (`f32`, `f64`, `f16` or `bf16`, on this rank's GPU) combined over all ranks, as a new
    /// tensor on the GPU; no host copy. What the trainer calls on each gradient.
    pub fn all_reduce_tensor(&self, t: &Tensor, op: ReduceOp) -> candle_core::Result<Tensor> {
        if self.world_size() == 1 {
            return Ok(t.clone());
        }
        t.contiguous()?.apply_op1_no_bwd(&AllReduceOp { nccl: self, op })
    }

    /// Host `buf` -> GPU -> all-reduce -> host.
    fn all_reduce_host<T: DeviceRepr + NcclType + Copy + Default>(
        &self,
        buf: &mut [T],
        op: ReduceOp,
        what: &'static str,
    ) -> Result<(), DistError> {
        if buf.is_empty() || self.world_size() == 1 {
            return Ok(());
        }
        let invalid = |msg: String| DistError::Invalid { op: what, msg };
        let mut dev: CudaSlice<T> = self.stream.clone_htod(buf).map_err(|e| invalid(format!("{e:?}")))?;
        {
            let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
            comm.0.all_reduce_in_place(&mut dev, &nccl_op(op)).map_err(|e| invalid(format!("{e:?}")))?;
        }
        self.stream.memcpy_dtoh(&dev, buf).map_err(|e| invalid(format!("{e:?}")))?;
        self.stream.synchronize().map_err(|e| invalid(format!("{e:?}")))?;
        Ok(())
    }
}

/// NCCL's reduction for ours: the mean is NCCL's `Avg` (a sum divided by the world size).
fn nccl_op(op: ReduceOp) -> nccl::ReduceOp {
    match op {
        ReduceOp::Sum => nccl::ReduceOp::Sum,
        ReduceOp::Mean => nccl::ReduceOp::Avg,
        ReduceOp::Max => nccl::ReduceOp::Max,
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.bootstrap.rank()
    }

    fn world_size(&self) -> usize {
        self.bootstrap.world_size()
    }

    fn local_rank(&self) -> usize {
        self.bootstrap.local_rank()
    }

    fn local_size(&self) -> usize {
        self.bootstrap.local_size()
    }

    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<(), DistError> {
        self.all_reduce_host(buf, op, "nccl all_reduce_f32")
    }

    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<(), DistError> {
        self.all_reduce_host(buf, op, "nccl all_reduce_f64")
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<(), DistError> {
        if buf.is_empty() || self.world_size() == 1 {
            return Ok(());
        }
        let invalid = |msg: String| DistError::Invalid { op: "nccl broadcast_f32", msg };
        let root = i32::try_from(root).map_err(|_| invalid(format!("root {root}")))?;
        let mut dev = self.stream.clone_htod(buf).map_err(|e| invalid(format!("{e:?}")))?;
        {
            let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
            comm.0.broadcast_in_place(&mut dev, root).map_err(|e| invalid(format!("{e:?}")))?;
        }
        self.stream.memcpy_dtoh(&dev, buf).map_err(|e| invalid(format!("{e:?}")))?;
        self.stream.synchronize().map_err(|e| invalid(format!("{e:?}")))
    }

    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        self.bootstrap.broadcast_bytes(buf, root)
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        self.bootstrap.all_gather_bytes(mine)
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.stream.synchronize().map_err(|e| DistError::Invalid { op: "nccl barrier", msg: format!("{e:?}") })?;
        self.bootstrap.barrier()
    }

    fn abort(&self, code: i32) -> ! {
        self.bootstrap.abort(code)
    }
}

/// The all-reduce of one device tensor, as a custom op so that the result is a candle tensor on
/// the same device and stream.
struct AllReduceOp<'a> {
    nccl: &'a Nccl,
    op: ReduceOp,
}

impl AllReduceOp<'_> {
    fn reduce<T: DeviceRepr + NcclType>(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<CudaStorage>
    where
        CudaStorage: WrapSlice<T>,
    {
        let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("nccl all-reduce: non-contiguous input") };
        let src = s.as_cuda_slice::<T>()?.slice(a..b);
        // SAFETY: NCCL writes every element of the receive buffer.
        let mut dst = unsafe { s.device.alloc::<T>(b - a)? };
        {
            let comm = self.nccl.comm.lock().unwrap_or_else(|e| e.into_inner());
            comm.0
                .all_reduce(&src, &mut dst, &nccl_op(self.op))
                .map_err(|e| candle_core::Error::Msg(format!("nccl all-reduce: {e:?}")))?;
        }
        Ok(<CudaStorage as WrapSlice<T>>::wrap(dst, s.device.clone()))
    }
}

/// `CudaStorage::wrap_cuda_slice` for the dtypes NCCL reduces.
trait WrapSlice<T> {
    fn wrap(slice: CudaSlice<T>, device: candle_core::cuda_backend::CudaDevice) -> CudaStorage;
}

macro_rules! wrap_slice {
    ($($t:ty),*) => {$(
        impl WrapSlice<$t> for CudaStorage {
            fn wrap(slice: CudaSlice<$t>, device: candle_core::cuda_backend::CudaDevice) -> CudaStorage {
                CudaStorage::wrap_cuda_slice(slice, device)
            }
        }
    )*};
}
wrap_slice!(f32, f64, half::f16, half::bf16);

impl CustomOp1 for AllReduceOp<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("nccl all-reduce: the tensor is on the CPU, not on this rank's GPU")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match s.dtype() {
            DType::F32 => self.reduce::<f32>(s, l)?,
            DType::F64 => self.reduce::<f64>(s, l)?,
            DType::F16 => self.reduce::<half::f16>(s, l)?,
            DType::BF16 => self.reduce::<half::bf16>(s, l)?,
            other => candle_core::bail!("nccl all-reduce: unsupported dtype {other:?}"),
        };
        Ok((out, l.shape().clone()))
    }
}

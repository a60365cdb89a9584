//! Dense layers with PyTorch's parameter layout, shared by the neck and the heads: a 2-D
//! convolution and a fully connected layer, both with a bias, both differentiable (the
//! convolution through [`crate::conv2d`], the linear layer through [`crate::linear`]).

use candle_core::{Result, Tensor};

use crate::autocast::Autocast;
use crate::params::{Init, ParamStore, Scope};

/// Xavier-uniform init for a layer with these fans (mmdetection's `xavier_init(distribution='uniform')`).
pub fn xavier_uniform(fan_in: usize, fan_out: usize) -> Init {
    Init::Uniform { bound: (6.0 / (fan_in + fan_out) as f64).sqrt() }
}

/// Kaiming-normal init, `mode='fan_out'`, ReLU gain (mmdetection's mask head convolutions).
pub fn kaiming_normal_fan_out(fan_out: usize) -> Init {
    Init::Normal { std: (2.0 / fan_out as f64).sqrt() }
}

/// PyTorch's `nn.Conv2d` with a bias: `weight: [out, in, k, k]`, `bias: [out]`, NCHW. Runs in
/// its store's autocast dtype ([`ParamStore::set_autocast`]).
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    store: ParamStore,
}

impl Conv2d {
    /// `scope.weight` (`[out, inp, k, k]`, from `init`) and `scope.bias` (zeros); square kernel.
    pub fn new(
        scope: &Scope,
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        init: Init,
    ) -> Result<Self> {
        let conv = Self::new_no_bias(scope, inp, out, k, stride, padding, init)?;
        Ok(Self { bias: Some(scope.param("bias", out, Init::Const(0.0))?), ..conv })
    }

    /// The same convolution without a bias parameter (before a batch norm).
    pub fn new_no_bias(
        scope: &Scope,
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        init: Init,
    ) -> Result<Self> {
        let weight = scope.param("weight", (out, inp, k, k), init)?;
        Ok(Self { weight, bias: None, stride, padding, store: scope.store().clone() })
    }

    /// `[N, inp, H, W]` to `[N, out, H', W']`, through [`crate::conv2d::conv2d`] (im2col and
    /// gemm with the bias fused, and a hand-written backward: several times faster than
    /// candle's `conv2d`, above all in training).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _autocast = Autocast::enable(self.store.autocast())?;
        crate::conv2d::conv2d(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    /// `(weight, bias, stride, padding)`: what describes the layer (to `nextdet analyze`).
    pub fn parts(&self) -> (&Tensor, Option<&Tensor>, usize, usize) {
        (&self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// PyTorch's `nn.Linear`: `weight: [out, in]`, `bias: [out]`. Runs in its store's autocast
/// dtype ([`ParamStore::set_autocast`]).
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
    store: ParamStore,
    /// The weight packed for inference.
    packed: PackedSlot,
}

impl Linear {
    /// `scope.weight` from `init` and `scope.bias` (zeros).
    pub fn new(scope: &Scope, inp: usize, out: usize, init: Init) -> Result<Self> {
        Ok(Self {
            weight: scope.param("weight", (out, inp), init)?,
            bias: scope.param("bias", out, Init::Const(0.0))?,
            store: scope.store().clone(),
            packed: PackedSlot::default(),
        })
    }

    /// `x @ weight^T` without the bias, on `[..., in]` (for callers that fuse the bias into the
    /// next step, as the ConvNeXt block does).
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        let _autocast = Autocast::enable(self.store.autocast())?;
        crate::linear_no_bias(x, &self.weight)
    }

    /// `[..., in]` to `[..., out]`: `x @ weight^T + bias`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::bias_add(&self.matmul(x)?, &self.bias)
    }

    /// The bias, for callers that fuse it into the next step.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The weight packed for inference in [`crate::inference_precision`] (`None` where the
    /// packed multiply does not run: another device, a CPU without AVX-512); see [`PackedSlot`].
    pub fn packed_weight(&self) -> Result<Option<std::sync::Arc<crate::PackedWeight>>> {
        self.packed.get(&self.weight)
    }

    /// [`Self::forward`] in training; at inference (`train` false) through the weight packed
    /// once where the packed multiply runs (not differentiable).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match if train { None } else { self.packed_weight()? } {
            Some(w) => crate::bias_add(&crate::linear_packed(x, &w)?, &self.bias),
            None => self.forward(x),
        }
    }

    /// The weight `[out, in]`, for callers that fuse the multiply with the step before it (the
    /// ConvNeXt block's GELU and second pointwise layer).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// A layer's weight (`[out, in]`) packed for inference, kept until the parameter values
/// ([`crate::weights_changed`]) or the inference precision change; packed on first use. Shared by
/// every layer that multiplies by a weight at inference.
#[derive(Default)]
pub struct PackedSlot(std::sync::Mutex<Option<(u64, std::sync::Arc<crate::PackedWeight>)>>);

impl PackedSlot {
    /// `weight` packed in [`crate::inference_precision`], from the slot when it is current
    /// (`None` where the packed multiply does not run: another device, a CPU without AVX-512).
    pub fn get(&self, weight: &Tensor) -> Result<Option<std::sync::Arc<crate::PackedWeight>>> {
        self.get_with(|| Ok(weight.clone()))
    }

    /// [`Self::get`] for a weight that takes work to form (a reordered kernel): `weight` runs
    /// only when the slot must be packed again.
    pub fn get_with(
        &self,
        weight: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Option<std::sync::Arc<crate::PackedWeight>>> {
        let generation = crate::weights_generation();
        let precision = crate::inference_precision();
        if !crate::PackedWeight::runs(precision) {
            return Ok(None); // nothing to pack here: do not form the weight
        }
        let mut slot = self.0.lock().expect("packed weight lock");
        if let Some((g, p)) = slot.as_ref() {
            if *g == generation && p.precision() == precision {
                return Ok(Some(p.clone()));
            }
        }
        let packed = crate::PackedWeight::from_weight(&weight()?, precision)?.map(std::sync::Arc::new);
        *slot = packed.clone().map(|p| (generation, p));
        Ok(packed)
    }
}

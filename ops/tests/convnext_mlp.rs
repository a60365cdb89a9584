//! The fused inference tail of a ConvNeXt block against the separate ops it replaces (which the
//! PyTorch fixtures of their own tests check): the same bits in f32 for row counts across the
//! chunking, bf16 within bf16's rounding, and shape errors.

use candle_core::{Device, Tensor};
use nextdet_ops::{
    bf16_supported, convnext_mlp_inference, gelu_linear, layer_scale_residual, linear_no_bias, PackedMlp, PackedWeight,
    Precision,
};
use nextdet_testutil::max_abs_diff;
use std::sync::Arc;

struct Weights {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    gamma: Option<Tensor>,
}

fn weights(c: usize, layer_scale: bool) -> Weights {
    let dev = Device::Cpu;
    Weights {
        w1: Tensor::randn(0f32, 0.1, (4 * c, c), &dev).unwrap(),
        b1: Tensor::randn(0f32, 0.5, 4 * c, &dev).unwrap(),
        w2: Tensor::randn(0f32, 0.1, (c, 4 * c), &dev).unwrap(),
        b2: Tensor::randn(0f32, 0.5, c, &dev).unwrap(),
        gamma: layer_scale.then(|| Tensor::randn(0f32, 0.3, c, &dev).unwrap()),
    }
}

fn packed(w: &Weights, precision: Precision) -> Option<PackedMlp> {
    let vec = |t: &Tensor| t.to_vec1::<f32>().unwrap();
    Some(PackedMlp {
        w1: Arc::new(PackedWeight::from_weight(&w.w1, precision).unwrap()?),
        b1: vec(&w.b1),
        w2: Arc::new(PackedWeight::from_weight(&w.w2, precision).unwrap()?),
        b2: vec(&w.b2),
        gamma: w.gamma.as_ref().map(vec),
    })
}

/// The separate ops: linear, GELU + linear, layer scale and residual.
fn separate(y: &Tensor, x: &Tensor, w: &Weights) -> Tensor {
    let h = gelu_linear(&linear_no_bias(y, &w.w1).unwrap(), &w.b1, &w.w2).unwrap();
    layer_scale_residual(&h, &w.b2, w.gamma.as_ref(), x).unwrap()
}

#[test]
fn f32_is_the_separate_ops_bit_for_bit() {
    for (c, rows, layer_scale) in [(8, 1, true), (16, 25, false), (24, 49, true), (32, 700, true), (96, 3136, true)] {
        let w = weights(c, layer_scale);
        let Some(mlp) = packed(&w, Precision::F32) else {
            return; // no AVX-512: the block uses the separate ops
        };
        let y = Tensor::randn(0f32, 1.0, (1, rows, c), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, rows, c), &Device::Cpu).unwrap();
        let got = convnext_mlp_inference(&y, &x, &mlp).unwrap();
        assert_eq!(got.dims(), x.dims());
        let want = separate(&y, &x, &w);
        assert_eq!(max_abs_diff(&got, &want), 0.0, "c {c}, {rows} rows");
    }
}

#[test]
fn bf16_stays_within_bf16_rounding_of_f32() {
    if !bf16_supported() {
        return;
    }
    for (c, rows) in [(8, 1), (32, 49), (64, 700)] {
        let w = weights(c, true);
        let y = Tensor::randn(0f32, 1.0, (rows, c), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (rows, c), &Device::Cpu).unwrap();
        let got = convnext_mlp_inference(&y, &x, &packed(&w, Precision::Bf16).unwrap()).unwrap();
        let want = separate(&y, &x, &w);
        // the branch's size: |gamma| * (|gelu(h)| · |W2| + |b2|), bounding its rounding error
        let branch = (want.clone() - &x).unwrap().abs().unwrap().max_keepdim(0).unwrap().max(1).unwrap();
        let scale = branch.to_vec1::<f32>().unwrap()[0].max(1e-3);
        let diff = max_abs_diff(&got, &want);
        assert!(diff > 0.0, "c {c}: bf16 gave exactly the f32 result; was it run?");
        assert!(diff < 0.05 * scale, "c {c}, {rows} rows: bf16 off by {diff}, branch up to {scale}");
    }
}

#[test]
fn shapes_that_do_not_fit_are_errors() {
    let w = weights(8, true);
    let Some(mlp) = packed(&w, Precision::F32) else {
        return;
    };
    let dev = Device::Cpu;
    let ok = Tensor::zeros((3, 8), candle_core::DType::F32, &dev).unwrap();
    let wide = Tensor::zeros((3, 9), candle_core::DType::F32, &dev).unwrap();
    let other = Tensor::zeros((4, 8), candle_core::DType::F32, &dev).unwrap();
    for (y, x) in [(&wide, &wide), (&ok, &other)] {
        let err = convnext_mlp_inference(y, x, &mlp).unwrap_err().to_string();
        assert!(err.contains("convnext_mlp"), "{err}");
    }
}

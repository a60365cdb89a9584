use candle_core::{Device, Tensor};
use nextdet_backbones::build_classifier;
use nextdet_backbones::config::*;
use nextdet_ops::ParamStore;
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batch: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1);
    let iters: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(5);
    let cfg = BackboneConfig::ConvNeXt(ConvNeXtConfig {
        arch: Some(ConvNeXtArch::Tiny),
        depths: None,
        dims: None,
        in_chans: 3,
        drop_path_rate: 0.0,
        layer_scale_init_value: 1e-6,
        out_indices: vec![0, 1, 2, 3],
    });
    let store = ParamStore::new(&Device::Cpu, 0);
    let net = build_classifier(&cfg, 1000, &store.root(), 0).unwrap();
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &Device::Cpu).unwrap();
    net.forward(&x, false).unwrap();
    let t = Instant::now();
    for _ in 0..iters {
        net.forward(&x, false).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!("batch {batch}: {:.1} ms/iter {:.2} img/s", s * 1000.0 / iters as f64, (batch * iters) as f64 / s);
    // dwconv alone
    for (c, hw) in [(96usize, 56usize), (192, 28), (384, 14), (768, 7)] {
        let x = Tensor::randn(0f32, 1.0, (8, hw, hw, c), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (c, 1, 7, 7), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, c, &Device::Cpu).unwrap();
        nextdet_ops::depthwise_conv2d_nhwc(&x, &w, &b).unwrap();
        let t = Instant::now();
        for _ in 0..20 {
            nextdet_ops::depthwise_conv2d_nhwc(&x, &w, &b).unwrap();
        }
        println!("dwconv [8,{c},{hw},{hw}] nhwc: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / 20.0);
    }
}

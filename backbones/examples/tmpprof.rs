use candle_core::{Device, Tensor};
use std::time::Instant;
fn t<F: FnMut()>(name: &str, n: usize, mut f: F) {
    f();
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    println!("{name:>12}: {:.3} ms", s.elapsed().as_secs_f64() * 1000.0 / n as f64);
}
fn main() {
    let batch: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1);
    for (c, hw) in [(96usize, 56usize), (192, 28), (384, 14), (768, 7)] {
        println!("stage C={c} HW={hw}");
        let d = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (batch, hw, hw, c), &d).unwrap();
        let w = Tensor::randn(0f32, 1.0, (c, 1, 7, 7), &d).unwrap();
        let b = Tensor::randn(0f32, 1.0, c, &d).unwrap();
        let w1 = Tensor::randn(0f32, 1.0, (4 * c, c), &d).unwrap();
        let b1 = Tensor::randn(0f32, 1.0, 4 * c, &d).unwrap();
        let w2 = Tensor::randn(0f32, 1.0, (c, 4 * c), &d).unwrap();
        let m = batch * hw * hw;
        let x2 = x.reshape((m, c)).unwrap();
        let h = x2.matmul(&w1.t().unwrap()).unwrap();
        t("dwconv", 20, || {
            nextdet_ops::depthwise_conv2d_nhwc(&x, &w, &b).unwrap();
        });
        t("layernorm", 20, || {
            nextdet_ops::layer_norm(&x, &b, &b, 1e-6).unwrap();
        });
        t("matmul1", 20, || {
            x2.matmul(&w1.t().unwrap()).unwrap();
        });
        t("bias_gelu", 20, || {
            nextdet_ops::bias_gelu(&h, &b1).unwrap();
        });
        t("matmul2", 20, || {
            h.matmul(&w2.t().unwrap()).unwrap();
        });
        t("residual", 20, || {
            nextdet_ops::layer_scale_residual(&x2, &b, Some(&b), &x2).unwrap();
        });
    }
}

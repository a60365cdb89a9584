use candle_core::{Device, Tensor};
use nextdet_backbones::layers::Block;
use nextdet_ops::ParamStore;
use rand::SeedableRng;
use std::time::Instant;
fn main() {
    std::env::set_var("RAYON_NUM_THREADS", "2");
    for (c, hw, n) in [(96usize, 56usize, 3usize), (192, 28, 3), (384, 14, 9), (768, 7, 3)] {
        let store = ParamStore::new(&Device::Cpu, 0);
        let rng = std::sync::Arc::new(std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(0)));
        let b = Block::new(&store.root(), c, 0.0, 1e-6, rng).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, hw, hw, c), &Device::Cpu).unwrap();
        for _ in 0..3 {
            b.forward(&x, false).unwrap();
        }
        let t = Instant::now();
        for _ in 0..50 {
            b.forward(&x, false).unwrap();
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / 50.0;
        println!("block C={c}: {ms:.3} ms  x{n} = {:.1} ms", ms * n as f64);
    }
}

// Gradient accumulation with native float atomics (adapters with SHADER_FLOAT32_ATOMIC).
@group(0) @binding(9) var<storage, read_write> grads: array<atomic<f32>>;

fn grad_add(i: u32, v: f32) {
    if v != 0.0 {
        atomicAdd(&grads[i], v);
    }
}

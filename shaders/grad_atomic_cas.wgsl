// Gradient accumulation by a compare-and-swap loop on the float's bits (adapters without float atomics).
@group(0) @binding(9) var<storage, read_write> grads: array<atomic<u32>>;

fn grad_add(i: u32, v: f32) {
    if v == 0.0 {
        return;
    }
    var old = atomicLoad(&grads[i]);
    loop {
        let swapped = atomicCompareExchangeWeak(&grads[i], old, bitcast<u32>(bitcast<f32>(old) + v));
        if swapped.exchanged {
            break;
        }
        old = swapped.old_value;
    }
}

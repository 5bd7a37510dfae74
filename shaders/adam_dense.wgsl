// Adam over a small dense network (the discriminator): one invocation per parameter, with bias
// correction; a non-finite gradient is dropped (the moments stay finite).

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let i = flat_index(wg, nwg, local, WORKGROUP);
    if i >= settings.count {
        return;
    }
    var g = grads[i];
    if !(abs(g) <= 3.0e38) {
        g = 0.0;
    }
    let m = settings.beta1 * m1[i] + (1.0 - settings.beta1) * g;
    let v = settings.beta2 * m2[i] + (1.0 - settings.beta2) * g * g;
    m1[i] = m;
    m2[i] = v;
    params[i] -= settings.lr * (m / settings.correction1) / (sqrt(v / settings.correction2) + settings.epsilon);
}

// The discriminator's logits l (one per position of the last tensor, `net.features[0]`) and the
// non-saturating GAN losses of the seed (§1.4), per position of every image:
//   generator (renders):        softplus(-l) / positions, its gradient -sigmoid(-l) / positions
//   discriminator, targets:     softplus(-l),  gradient -sigmoid(-l) / (positions squares)
//   discriminator, renders:     softplus(l),   gradient  sigmoid(l) / (positions squares cuts)
// (the discriminator's loss is the mean over the chunk's targets plus the mean over its renders: it
// trains on the chunk). `values` holds, per image and position, the generator's share for a render
// and the discriminator's for a target, then (after `net.images` images) the discriminator's share
// of each render; loss_patch_net sums them per square.

fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let index = flat_index(wg, nwg, local, WORKGROUP);
    let logits = net.features[0];
    let positions = logits.z * logits.z;
    if index >= net.images * positions {
        return;
    }
    let image = index / positions;
    let l = acts[logits.x + index];
    let inv = 1.0 / f32(positions);
    let renders = net.n_cuts * net.squares;
    if image < renders {
        values[index] = softplus(-l) * inv;
        gen_grads[logits.x + index] = -sigmoid(-l) * inv;
        values[net.images * positions + index] = softplus(l) * inv;
        disc_grads[logits.x + index] = sigmoid(l) * inv / f32(net.squares * net.n_cuts);
    } else {
        values[index] = softplus(-l) * inv;
        disc_grads[logits.x + index] = -sigmoid(-l) * inv / f32(net.squares);
    }
}

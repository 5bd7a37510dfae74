// The input of a network on the structure patches (LPIPS, src/lpips.rs; the discriminator,
// src/adversarial.rs): every image of the chunk's structure patches, as tensor 0 of the
// activations (3 x size x size per image). Image cut * squares + square is the square rendered at
// that cut, n_cuts * squares + square its target; colours go through the scaling layer,
// (2 x - 1 - shift) / scale (LPIPS's scaling layer; 2 x - 1 for the discriminator). A pixel off its image is 0 in both, so it never differs.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let index = flat_index(wg, nwg, local, WORKGROUP);
    let pixels = net.size * net.size;
    let renders = net.n_cuts * net.squares;
    if index >= (renders + net.squares) * pixels {
        return;
    }
    let image = index / pixels;
    let pixel = index % pixels;
    let ray = square_ray(image % net.squares, vec2<u32>(pixel % net.size, pixel / net.size));
    var rgb = rays[ray].target_rgb.xyz;
    if image < renders {
        rgb = outputs[(image / net.squares) * batch.n_rays + ray].rgb;
    }
    var x = (2.0 * rgb - 1.0 - net.shift.xyz) / net.scale.xyz;
    if !on_image(ray) {
        x = vec3<f32>(0.0);
    }
    let first = image * 3u * pixels + pixel;
    acts[first] = x.x;
    acts[first + pixels] = x.y;
    acts[first + 2u * pixels] = x.z;
}

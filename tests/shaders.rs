//! Every pass parses and validates with naga for several field shapes, and the host records have
//! the sizes the WGSL structs have.

use infnerf::config::Config;
use infnerf::field::FieldLayout;
use infnerf::gpu::shader::{KernelShape, Pass};

const PASSES: [Pass; 12] = [
    Pass::Rays,
    Pass::Samples,
    Pass::NodeLists,
    Pass::ScatterSamples,
    Pass::Decoders,
    Pass::FieldForward,
    Pass::Render,
    Pass::FieldBackward,
    Pass::Adam,
    Pass::LossStats,
    Pass::Occupancy,
    Pass::OccupancyMean,
];

fn validate(source: &str, name: &str) -> naga::Module {
    let module =
        naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    module
}

#[test]
fn every_pass_validates_for_several_shapes() {
    let mut shapes = vec![Config::default(), Config::tiny()];
    let mut wide = Config::default();
    wide.field.hidden_width = 64;
    wide.field.sh_degree = 4;
    wide.field.hash_levels = 16;
    shapes.push(wide);
    for config in shapes {
        for atomics in [true, false] {
            let shape = KernelShape::new(FieldLayout::new(&config.field), atomics, 32 * 1024);
            for pass in PASSES {
                validate(&shape.source(pass), pass.name());
            }
        }
    }
}

fn struct_size(module: &naga::Module, name: &str) -> u32 {
    let ty = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no struct {name}"))
        .1;
    match &ty.inner {
        naga::TypeInner::Struct { span, .. } => *span,
        _ => panic!("{name} is not a struct"),
    }
}

#[test]
fn host_records_match_wgsl_layouts() {
    let shape = KernelShape::new(FieldLayout::new(&Config::tiny().field), true, 32 * 1024);
    let rays = validate(&shape.source(Pass::Rays), "rays");
    let field = validate(&shape.source(Pass::FieldForward), "field_forward");
    use infnerf::gpu::records::*;
    assert_eq!(struct_size(&rays, "Frame") as usize, std::mem::size_of::<Frame>());
    assert_eq!(struct_size(&rays, "Ray") as usize, std::mem::size_of::<Ray>());
    assert_eq!(struct_size(&rays, "Camera") as usize, std::mem::size_of::<GpuCamera>());
    assert_eq!(struct_size(&rays, "Patch") as usize, std::mem::size_of::<Patch>());
    assert_eq!(struct_size(&rays, "Sample") as usize, std::mem::size_of::<Sample>());
    assert_eq!(struct_size(&rays, "RayResult") as usize, std::mem::size_of::<RayResult>());
    assert_eq!(struct_size(&field, "Node") as usize, std::mem::size_of::<infnerf::octree::Node>());
}

#version 330 core
// Sharp upscaling: each source texel becomes a flat block, and only the one-output-pixel-wide
// seam between neighbouring blocks is blended (by the bilinear sampler), so edges stay crisp
// without the uneven block widths of nearest filtering at non-integer scales.
uniform sampler2D image;
uniform vec2 source_size;   // texels
uniform vec2 target_size;   // output pixels covered by the image
in vec2 uv;
out vec4 color;

void main() {
    vec2 texel = uv * source_size;
    vec2 pixels_per_texel = max(target_size / source_size, vec2(1.0));
    vec2 centre = floor(texel - 0.5) + 0.5;
    vec2 offset = clamp((texel - centre - 0.5) * pixels_per_texel + 0.5, 0.0, 1.0);
    color = vec4(texture(image, (centre + offset) / source_size).rgb, 1.0);
}

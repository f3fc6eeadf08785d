#version 330 core
// A rectangle given in normalised device coordinates (x0, y0, x1, y1), drawn as a 4-vertex strip.
// Texture row 0 is the image's top row, so v runs from 0 at the top edge to 1 at the bottom.
uniform vec4 rect;
out vec2 uv;

void main() {
    vec2 corner = vec2(gl_VertexID & 1, gl_VertexID >> 1);
    uv = vec2(corner.x, 1.0 - corner.y);
    gl_Position = vec4(mix(rect.xy, rect.zw, corner), 0.0, 1.0);
}

#version 330 core
// HUD and overlay text: an RGBA image blended over the frame.
uniform sampler2D image;
in vec2 uv;
out vec4 color;

void main() {
    color = texture(image, uv);
}

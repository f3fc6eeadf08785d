"""World action spaces: VPT/MineRL action vectors (`vpt`) and keyboard/mouse keymaps (`keymap`)."""

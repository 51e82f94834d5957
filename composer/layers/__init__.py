"""Plain ``nn.Module`` building blocks shared by several block families (not blocks themselves)."""

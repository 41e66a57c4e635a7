"""Local simulators of banks and payment companies, speaking their real protocols, for tests and the demo."""

"""The data a model learns from and a site is sent: dataset specs with their derived-feature
expressions, a plant's own data files read through a spec, and the simulated machines (the
AI4I milling machine, a centrifugal pump) that are the default data of demos, tests and benches."""

"""GLoMo (Global-Local Modal fusion, ACM MM 2024) block configs: unimodal coding (eqs. 1-4) and the global-guided fusion (eqs. 8-13)."""

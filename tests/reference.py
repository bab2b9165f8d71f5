"""Published and recomputed reference values, with their provenance (docs/reference.md).

"Recomputed" values come from the files lifetimes ships, not from a paper: they are regression values
and are compared with a looser tolerance.
"""

# Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2):
# CDNOW 2,357-customer cohort, calibration weeks 1-39; also the R BTYD vignette and CLVTools tests.
BGNBD_CDNOW_SAMPLE = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}
BGNBD_CDNOW_SAMPLE_LOG_LIKELIHOOD = -9582.43

# Same paper; BTYD vignette log-likelihood -9594.976.
PARETO_CDNOW_SAMPLE = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
PARETO_CDNOW_SAMPLE_LOG_LIKELIHOOD = -9594.976

# lifetimes tests (agrees with R BTYDplus).
MBGNBD_CDNOW_SAMPLE = {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}

# Hardie's spreadsheet, quoted in lifetimes tests: customer with x=2, t_x=30.43, T=38.86, next 39 weeks.
BGNBD_CONDITIONAL_EXPECTATION_39 = 1.226
BGNBD_P_ALIVE = 0.727

# lifetimes tests; BTYD vignette: E[X(t)] of a new customer at t = 1, 3, 32, 52, 78 weeks.
BGNBD_NEW_CUSTOMER_EXPECTATIONS = {1: 0.0532, 3: 0.1506, 32: 1.0437, 52: 1.444, 78: 1.8576}

# Fader & Hardie (2013), "The Gamma-Gamma model of monetary value": 946 repeat buyers.
GAMMA_GAMMA_CDNOW_SAMPLE = {"p": 6.25, "q": 3.74, "gamma": 15.44}
GAMMA_GAMMA_CDNOW_SAMPLE_LOG_LIKELIHOOD = -4055.92

# Hardie's spreadsheet, quoted in lifetimes tests: Gamma-Gamma E[spend] of the first ten customers.
GAMMA_GAMMA_FIRST_TEN_EXPECTED_SPEND = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]

# Recomputed from CDNOW_sample.txt.
CDNOW_SAMPLE_CALIBRATION_REPEAT_PURCHASES = 2457
CDNOW_SAMPLE_HOLDOUT_REPEAT_PURCHASES = 1882

# The heuristic's worked examples in the marketing articles it comes from (docs/reference.md):
# (average purchase value, purchases per year, lifespan years, CLV).
HEURISTIC_WORKED_EXAMPLES = [(1_000, 6, 5, 30_000), (5_000, 4, 8, 160_000), (800, 5, 3, 12_000)]

# DERT (discounted expected residual transactions) of Pareto/NBD, docs REFERENCE.md "DERT": R BTYD 2.4.3 `pnbd.DERT`
# (an independent implementation, run on this project's machines) at BTYD's own fit of the CDNOW sample, continuous
# discounting delta = 0.15 / 52 a week, for the customer x = 2, t_x = 30.43, T = 38.86. No printed value is known.
# CLVTools 0.11.2 gives 6.22792325440761 for that customer at its own fit (s and beta ~5e-4 from BTYD's).
BTYD_PARETO_CDNOW_SAMPLE = {"r": 0.553371025230202, "alpha": 10.5795196344365, "s": 0.605907381772719,
                            "beta": 11.658116182064}  # fmt: skip
BTYD_DERT_DELTA = 0.15 / 52
BTYD_DERT_CUSTOMER = (2.0, 30.43, 38.86)
BTYD_DERT = 6.22828547348117
CLVTOOLS_DERT = 6.22792325440761
# Gamma-Gamma expected spend of that customer (Hardie's spreadsheet value 24.65, to more digits).
BTYD_DERT_CUSTOMER_EXPECTED_SPEND = 24.6540311704301

"""A synthetic credit-scoring data set with a protected attribute, proxies for it, and biased historical labels.

Each record is a loan applicant. Whether they would repay (`would_repay`) depends only on legitimate financial
features. The recorded decision (`approved`) comes from past loan officers who denied a share of creditworthy
women and young applicants: the labels a model learns from are worse for those groups than repayment ability
justifies. `sex` and `age_group` are not model features, but part-time work, career breaks and the postcode
risk score carry much of `sex`, so a model trained on the recorded labels learns the bias through them.

Run `python generate.py --n 8000 --seed 0 --out credit.csv` to look at the raw table; train.py standardises it
and writes the parquet file the audit reads. README.md describes every column.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

LABELS = ("approved", "denied")  # (favourable, unfavourable)
SENSITIVE = ("sex", "age_group")
PROXIES = ("part_time", "career_break_years", "postcode_risk")
LEGITIMATE = (
    "income_k",
    "debt_ratio",
    "loan_amount_k",
    "credit_history_years",
    "employment_years",
    "late_payments",
    "existing_loans",
)
FEATURES = LEGITIMATE + PROXIES

# Historical label bias: the share of applicants who would repay but were recorded as denied.
DENIAL_BIAS = {"female": 0.45, "18-29": 0.20}


def _z(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / (v.std() + 1e-12)


def generate(n: int = 8000, seed: int = 0, *, train_fraction: float = 0.5) -> pd.DataFrame:
    """`n` applicants (one row each), deterministic for `seed`.

    Columns: the features in FEATURES (raw units: thousands of euros, years, counts, 0/1 flags), the sensitive
    attributes `sex` ("female"/"male") and `age_group` ("18-29"/"30-49"/"50+"), the recorded label `approved`
    ("approved"/"denied"), the unbiased outcome `would_repay` (0/1, for analysis only; not a feature) and
    `split` ("train" for the first `train_fraction` of the shuffled rows, "holdout" for the rest).
    """
    if n < 4:
        raise ValueError("n must be at least 4 (two records per split)")
    rng = np.random.default_rng(seed)

    female = rng.random(n) < 0.5
    age = rng.uniform(18, 75, n)
    age_group = np.where(age < 30, "18-29", np.where(age < 50, "30-49", "50+"))

    # Proxies: distributed differently by sex, and (except the postcode score) not irrelevant to income.
    part_time = (rng.random(n) < np.where(female, 0.50, 0.08)).astype(np.int64)
    had_break = rng.random(n) < np.where(female, 0.60, 0.10)
    career_break_years = np.round(np.where(had_break, rng.exponential(np.where(female, 2.5, 1.0)), 0.0), 1)
    postcode_risk = np.round(rng.normal(0.0, 1.0, n) + 0.8 * female, 3)  # a neighbourhood score; no effect on repayment

    # Legitimate features.
    stability = rng.normal(0.0, 1.0, n)  # unobserved financial discipline
    working_years = np.maximum(age - 20, 0.0)
    employment_years = np.round(np.clip(working_years - career_break_years, 0, None) * rng.uniform(0.3, 1.0, n), 1)
    income_k = np.round(
        np.exp(rng.normal(np.log(36.0), 0.40, n) + 0.012 * np.minimum(employment_years, 25)) * np.where(part_time == 1, 0.6, 1.0),
        1,
    )
    debt_ratio = np.round(np.clip(rng.beta(2.0, 5.0, n) - 0.05 * stability, 0.0, 0.95), 3)
    loan_amount_k = np.round(np.exp(rng.normal(np.log(15.0), 0.6, n)), 1)
    credit_history_years = np.round(rng.uniform(0.2, 1.0, n) * np.maximum(age - 18, 0.5), 1)
    late_payments = rng.poisson(np.exp(0.2 - 0.7 * stability))
    existing_loans = rng.poisson(1.2, n)

    # Repayment ability depends on legitimate features only (and unobserved luck).
    ability = (
        1.1 * _z(np.log(income_k))
        - 1.0 * _z(debt_ratio)
        - 0.9 * _z(np.log(loan_amount_k / income_k))
        + 0.5 * _z(np.log1p(credit_history_years))
        + 0.3 * _z(np.log1p(employment_years))
        - 1.0 * _z(np.log1p(late_payments))
        - 0.3 * _z(existing_loans.astype(float))
        + 0.8
    )
    would_repay = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * ability))

    # Historical decisions: creditworthy women and young applicants were denied part of the time.
    bias = np.where(female, DENIAL_BIAS["female"], 0.0)
    bias = 1.0 - (1.0 - bias) * (1.0 - np.where(age_group == "18-29", DENIAL_BIAS["18-29"], 0.0))
    approved = would_repay & (rng.random(n) >= bias)

    n_train = max(1, min(n - 1, int(round(n * train_fraction))))
    split = np.full(n, "holdout", dtype=object)
    split[rng.permutation(n)[:n_train]] = "train"

    return pd.DataFrame(
        {
            "income_k": income_k,
            "debt_ratio": debt_ratio,
            "loan_amount_k": loan_amount_k,
            "credit_history_years": credit_history_years,
            "employment_years": employment_years,
            "late_payments": late_payments.astype(np.int64),
            "existing_loans": existing_loans.astype(np.int64),
            "part_time": part_time,
            "career_break_years": career_break_years,
            "postcode_risk": postcode_risk,
            "sex": np.where(female, "female", "male").astype(object),
            "age_group": age_group.astype(object),
            "would_repay": would_repay.astype(np.int64),
            "approved": np.where(approved, LABELS[0], LABELS[1]).astype(object),
            "split": split,
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the raw synthetic credit data set (CSV) for inspection.")
    parser.add_argument("--n", type=int, default=8000, help="records in all (half train, half holdout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("credit.csv"), help="CSV file to write")
    args = parser.parse_args(argv)
    df = generate(args.n, args.seed)
    df.to_csv(args.out, index=False)
    print(f"wrote {len(df)} records to {args.out}")


if __name__ == "__main__":
    main()

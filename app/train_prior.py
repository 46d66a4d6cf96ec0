"""`python -m app.train_prior`: trains the bundled toy-shapes diffusion prior (see app/toy/train_prior.py)."""
from app.toy.train_prior import main

if __name__ == "__main__":
    main()

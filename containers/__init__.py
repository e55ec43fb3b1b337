"""Building the images of Dockerfile.gpu (build.py, `make image`) and what each installs
(requirements.py). Not part of the installed package: tools of this repository."""

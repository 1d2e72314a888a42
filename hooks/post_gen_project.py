"""Print the next steps. Nothing else: no network, no git, no installs."""

import json

# Answers as data, read the way pre_gen_project.py reads them.
# fmt: off
PROJECT_SLUG = json.loads(r'''{{ cookiecutter.project_slug | tojson }}''')
PACKAGE_NAME = json.loads(r'''{{ cookiecutter.package_name | tojson }}''')
# fmt: on

print(
    f"""
Created {PROJECT_SLUG}/. Next steps:

    cd {PROJECT_SLUG}
    python3 -m venv .venv && . .venv/bin/activate
    pip install -e ".[dev]"
    pytest
    uvicorn {PACKAGE_NAME}.main:app --reload    # then open the dashboard, see README.md
"""
)

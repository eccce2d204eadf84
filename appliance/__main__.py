"""`python -m appliance` is the `appliance` command."""

from appliance.cli import main

if __name__ == "__main__":  # the spawned parser process re-imports this module
    main()

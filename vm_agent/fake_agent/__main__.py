import sys

from vm_agent.fake_agent import main

sys.exit(main())
